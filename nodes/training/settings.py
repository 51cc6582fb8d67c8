"""How a training run optimises (the recipe decides what): the settings every training node passes to
the shared loop, their checks, the optimizer they build and the autocast precision."""

from __future__ import annotations

from dataclasses import dataclass

import torch

OPTIMIZERS: tuple[str, ...] = ("AdamW", "Adam", "SGD", "Adafactor")
# diffusers.optimization.SchedulerType values that need no extra argument.
LR_SCHEDULERS: tuple[str, ...] = ("constant", "constant_with_warmup", "linear", "cosine",
                                  "cosine_with_restarts", "polynomial")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class TrainSettings:
    """How to optimise; the recipe decides what. ``max_grad_norm`` 0 disables clipping."""

    steps: int
    seed: int = 0
    learning_rate: float = 1e-4
    optimizer: str = "AdamW"
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    gradient_accumulation: int = 1
    max_grad_norm: float = 1.0
    precision: str = "auto"
    checkpoint_every: int = 100
    preview_every: int = 50
    keep_checkpoints: int = 2


class TrainingError(RuntimeError):
    """A run that cannot go on (non-finite loss, unusable settings); the message says why."""


def warmup_problem(lr_scheduler: str | None, lr_warmup_steps: int | None) -> str | None:
    """diffusers' ``constant`` schedule ignores its warmup steps; say so instead of dropping them."""
    if lr_scheduler == "constant" and (lr_warmup_steps or 0) > 0:
        return (f"lr_warmup_steps {lr_warmup_steps} has no effect with lr_scheduler constant: "
                f"use constant_with_warmup, or set lr_warmup_steps to 0")
    return None


def check_settings(s: TrainSettings) -> None:
    problems = []
    if s.steps < 1:
        problems.append(f"steps must be at least 1, got {s.steps}")
    if s.gradient_accumulation < 1:
        problems.append(f"gradient_accumulation must be at least 1, got {s.gradient_accumulation}")
    if s.optimizer not in OPTIMIZERS:
        problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {s.optimizer!r}")
    if s.lr_scheduler not in LR_SCHEDULERS:
        problems.append(f"lr_scheduler must be one of {', '.join(LR_SCHEDULERS)}, got {s.lr_scheduler!r}")
    if (warmup := warmup_problem(s.lr_scheduler, s.lr_warmup_steps)) is not None:
        problems.append(warmup)
    if s.precision not in PRECISIONS:
        problems.append(f"precision must be one of {', '.join(PRECISIONS)}, got {s.precision!r}")
    if problems:
        raise TrainingError("; ".join(problems))


def build_optimizer(settings: TrainSettings, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    lr, wd = settings.learning_rate, settings.weight_decay
    if settings.optimizer == "AdamW":
        return torch.optim.AdamW(params, lr=lr, betas=settings.betas, weight_decay=wd)
    if settings.optimizer == "Adam":
        return torch.optim.Adam(params, lr=lr, betas=settings.betas, weight_decay=wd)
    if settings.optimizer == "SGD":
        return torch.optim.SGD(params, lr=lr, momentum=settings.betas[0], weight_decay=wd)
    from transformers.optimization import Adafactor

    return Adafactor(params, lr=lr, weight_decay=wd, scale_parameter=False, relative_step=False, warmup_init=False)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """fp16/bf16 autocast on CUDA ("auto": bf16 where supported); None (fp32) elsewhere."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16 if precision == "fp16" else torch.bfloat16
