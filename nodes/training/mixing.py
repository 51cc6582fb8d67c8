"""DistillFineTune's loss: distillation against the frozen original model mixed with the ordinary
denoising loss, the mix moving from the first to the second over training (EcomXL stage 1).

EcomXL (alimama-creative) fine-tunes SDXL on its domain in two stages; the first keeps the model
close to the original by distilling from it while the denoising loss takes over. With λ the
distillation weight at a training step (``distill_weight``),

    loss = λ · ‖ŷ_student − ŷ_original‖² + (1 − λ) · ‖ŷ_student − y‖²

where ŷ are the model outputs (ε, v or x0, as the model predicts) at the same noisy latent,
timestep and text, and ``y`` the denoising target. Both terms may carry per-sample weights
(min-SNR), so they stay on one scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Tensor = torch.Tensor
SCHEDULES: tuple[str, ...] = ("linear", "cosine", "constant")


def distill_weight(step: int, total: int, *, schedule: str = "linear", start: float = 1.0, end: float = 0.0) -> float:
    """λ at optimizer step ``step`` of ``total`` (0-based; step 0 gives ``start``, the last step
    ``end``): ``linear`` moves evenly, ``cosine`` along half a cosine (slow at both ends),
    ``constant`` keeps ``start``. Raises ValueError for an unknown schedule, a weight outside
    [0, 1] or a step outside the run."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule {schedule!r} is not supported; use one of {list(SCHEDULES)}")
    for name, value in (("distill_weight_start", start), ("distill_weight_end", end)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if total < 1 or not 0 <= step < total:
        raise ValueError(f"step {step} is outside a {total}-step run")
    progress = step / (total - 1) if total > 1 else 1.0
    if schedule == "constant":
        return start
    if schedule == "linear":
        return start + (end - start) * progress
    return end + (start - end) * (1 + math.cos(math.pi * progress)) / 2


def never_distils(schedule: str, start: float, end: float) -> bool:
    """Whether λ is 0 at every step of a run (plain denoising: the original's output is unused)."""
    return start == 0.0 and (end == 0.0 or schedule == "constant")


@dataclass(frozen=True)
class MixedLoss:
    """The mixed loss and its two parts (detached, for the loss history)."""

    total: Tensor
    distill: float
    denoise: float
    weight: float


def mixed_loss(student: Tensor, original: Tensor | None, target: Tensor, weight: float,
               sample_weights: Tensor | None = None) -> MixedLoss:
    """``weight``·MSE(student, original) + (1 − ``weight``)·MSE(student, target), each averaged per
    sample, scaled by ``sample_weights`` ([B], e.g. min-SNR) and then over the batch. Tensors are
    ``[B, C, H, W]``; computed in fp32. ``original`` is the frozen model's output (no gradient), or
    None when ``weight`` is 0 (the distillation part is then reported as 0)."""
    if original is None:
        if weight != 0.0:
            raise ValueError(f"the original model's output is needed at distillation weight {weight}")
        original = student.detach()
    if student.shape != original.shape or student.shape != target.shape:
        raise ValueError(f"shapes differ: student {list(student.shape)}, original {list(original.shape)}, "
                         f"target {list(target.shape)}")
    dims = tuple(range(1, student.ndim))
    distill = (student.float() - original.detach().float()).pow(2).mean(dim=dims)
    denoise = (student.float() - target.float()).pow(2).mean(dim=dims)
    if sample_weights is not None:
        distill, denoise = distill * sample_weights, denoise * sample_weights
    distill_mean, denoise_mean = distill.mean(), denoise.mean()
    total = weight * distill_mean + (1.0 - weight) * denoise_mean
    return MixedLoss(total, float(distill_mean.detach()), float(denoise_mean.detach()), weight)
