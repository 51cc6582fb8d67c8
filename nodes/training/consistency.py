"""SLAM consistency distillation as small pure functions on tensors (no UNet, no loop).

The recipe is diffusers' latent-consistency distillation
(``examples/consistency_distillation/train_lcm_distill_lora_sd_wds.py``; Luo et al. 2023,
arXiv 2310.04378, Algorithm 1) with SLAM's change (Xu et al. 2024, "Accelerating Image Generation
with Sub-path Linear Approximation Model", arXiv 2404.13903, and its published training script):

1. pick a point ``t`` of the 50-step DDIM grid (``t = 20i - 1``, skip ``k = 20``) and noise a clean
   latent to ``x_t``;
2. the teacher (classifier-free guided with a scale drawn from ``U[w_min, w_max]``) makes one DDIM
   step ``t -> t-k``, giving ``x_{t-k}``;
3. **SLAM**: draw ``γ ~ U[0, 1]`` and build the sub-path point
   ``x_γ = (1-γ)·(α_t/α_{t-k})·x_{t-k} + γ·x_t`` between the two ends (γ = 1 is LCM);
4. the student predicts at ``(x_γ, t)``; its noise prediction becomes a clean-latent estimate with
   the sub-path point's own noise level ``σ_γ`` (:func:`sub_path_sigma`), then the consistency
   parameterisation ``c_skip(t)·x_γ + c_out(t)·x̂0``;
5. the target is the no-grad (or EMA) student at ``(x_{t-k}, t-k)``, same parameterisation;
6. loss: L2 or pseudo-Huber between the two.

All tensors are ``[B, C, H, W]`` float latents; per-sample scalars are ``[B, 1, 1, 1]``;
timesteps are ``[B]`` int64 on the 1000-step training schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from nodes.diffusion.samplers import DISTILLATION_GRID

Tensor = torch.Tensor
LossKind = Literal["l2", "huber"]
LOSS_KINDS: tuple[str, ...] = ("l2", "huber")
PREDICTIONS: tuple[str, ...] = ("epsilon", "v_prediction", "sample")
# LCMScheduler's (and the distillation scripts') boundary-condition constants.
SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0


@dataclass(frozen=True)
class SolverGrid:
    """The DDIM solver's grid over a model's noise schedule.

    ``alphas_cumprod``: ``[T]`` ᾱ of the training schedule (T = 1000 for SD). ``timesteps``:
    ``[N]`` grid points ``(i+1)·k - 1`` (k = T // N), the timesteps LCMScheduler samples from.
    """

    alphas_cumprod: Tensor
    timesteps: Tensor
    skip: int
    timestep_scaling: float = TIMESTEP_SCALING

    @classmethod
    def from_scheduler_config(cls, config: dict[str, Any], *, grid: int = DISTILLATION_GRID,
                              timestep_scaling: float = TIMESTEP_SCALING) -> SolverGrid:
        """The grid over the noise schedule a MODEL's scheduler config describes (betas, zero-SNR
        rescaling, as LCMScheduler builds them for sampling). Raises ValueError for a grid that
        does not divide the schedule."""
        scheduler = lcm_scheduler(config)
        total = int(scheduler.config.num_train_timesteps)
        if not 1 <= grid <= total:
            raise ValueError(f"the solver grid must have 1 to {total} points, got {grid}")
        skip = total // grid
        timesteps = torch.arange(1, grid + 1, dtype=torch.int64) * skip - 1
        return cls(scheduler.alphas_cumprod.float(), timesteps, skip, timestep_scaling)

    def pick(self, batch: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(``t``, ``t_prev``) for a batch: uniform grid points and one skip below (clamped at 0)."""
        index = torch.randint(0, len(self.timesteps), (batch,), generator=generator)
        start = self.timesteps[index]
        return start, (start - self.skip).clamp(min=0)

    def alpha_sigma(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """(α_t = √ᾱ_t, σ_t = √(1-ᾱ_t)) as ``[B, 1, 1, 1]`` in ``like``'s dtype and device."""
        abar = self.alphas_cumprod.to(t.device)[t].to(like)
        shape = (-1,) + (1,) * (like.ndim - 1)
        return abar.sqrt().reshape(shape), (1 - abar).sqrt().reshape(shape)

    def boundary_scalings(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """(c_skip, c_out) of the consistency parameterisation at ``t``, as LCMScheduler computes
        them for sampling (``sigma_data`` 0.5, ``timestep_scaling`` 10): c_skip → 1, c_out → 0 at
        t = 0, so f(x, 0) = x."""
        scaled = t.to(like.device, torch.float64) * self.timestep_scaling
        c_skip = SIGMA_DATA ** 2 / (scaled ** 2 + SIGMA_DATA ** 2)
        c_out = scaled / (scaled ** 2 + SIGMA_DATA ** 2).sqrt()
        shape = (-1,) + (1,) * (like.ndim - 1)
        return c_skip.to(like).reshape(shape), c_out.to(like).reshape(shape)


def lcm_scheduler(config: dict[str, Any], **overrides: Any) -> Any:
    """diffusers' LCMScheduler over a MODEL's scheduler config (only the options it takes: the
    betas, prediction type, zero-SNR rescaling), as SLAMSampler samples with it."""
    import inspect

    from diffusers import LCMScheduler

    known = inspect.signature(LCMScheduler.__init__).parameters
    return LCMScheduler.from_config({**{k: v for k, v in config.items() if k in known}, **overrides})


def predicted_x0(output: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor, prediction: str) -> Tensor:
    """The clean-latent estimate from a model ``output`` at a point ``x = α·x0 + σ·ε``.

    For a point off the variance-preserving path (α² + σ² < 1: SLAM's sub-path points) ``v``
    predictions are read at the rescaled point ``x / √(α² + σ²)``; ε and x0 need no rescaling.
    Raises ValueError for an unknown ``prediction`` type."""
    if prediction == "epsilon":
        return (x - sigma * output) / alpha
    if prediction == "sample":
        return output
    if prediction == "v_prediction":
        scale = (alpha ** 2 + sigma ** 2).sqrt()
        return alpha * x / scale ** 2 - sigma * output / scale
    raise ValueError(f"prediction type {prediction!r} is not supported; use one of {list(PREDICTIONS)}")


def predicted_noise(output: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor, prediction: str) -> Tensor:
    """The noise estimate ε̂ from a model ``output`` at ``x = α·x0 + σ·ε`` (as DDIMScheduler.step)."""
    if prediction == "epsilon":
        return output
    if prediction == "sample":
        return (x - alpha * output) / sigma
    if prediction == "v_prediction":
        scale = (alpha ** 2 + sigma ** 2).sqrt()
        return sigma * x / scale ** 2 + alpha * output / scale
    raise ValueError(f"prediction type {prediction!r} is not supported; use one of {list(PREDICTIONS)}")


def ddim_step(x0: Tensor, eps: Tensor, alpha_prev: Tensor, sigma_prev: Tensor) -> Tensor:
    """One deterministic DDIM step (η = 0) to the earlier timestep: ``α_prev·x̂0 + σ_prev·ε̂``.
    Equals ``DDIMScheduler.step`` over a skip of k = T/N timesteps (``set_alpha_to_one=False``)."""
    return alpha_prev * x0 + sigma_prev * eps


def guided(cond: Tensor, uncond: Tensor, scale: Tensor | float) -> Tensor:
    """Classifier-free guidance ``uncond + s·(cond - uncond)`` (ComfyUI's/Imagen's cfg ``s``; the
    LCM paper's ``w`` is ``s - 1``). Linear in the model output, so guiding the raw output equals
    guiding its x0 and ε estimates as the distillation scripts do."""
    return uncond + scale * (cond - uncond)


def sample_guidance(batch: int, low: float, high: float, generator: torch.Generator | None = None) -> Tensor:
    """``[B]`` guidance scales drawn from U[low, high] (LCM's guidance-scale sampling)."""
    if low > high:
        raise ValueError(f"guidance_min {low} is above guidance_max {high}")
    return low + (high - low) * torch.rand(batch, generator=generator)


def sub_path_point(x_t: Tensor, x_prev: Tensor, gamma: Tensor, alpha_t: Tensor, alpha_prev: Tensor) -> Tensor:
    """SLAM's sub-path linear interpolation ``x_γ = (1-γ)·(α_t/α_{t-k})·x_{t-k} + γ·x_t``:
    γ = 1 is ``x_t`` itself, γ = 0 the teacher's point rescaled to ``x_t``'s signal level."""
    return (1 - gamma) * (alpha_t / alpha_prev) * x_prev + gamma * x_t


def sub_path_sigma(alpha_t: Tensor, alpha_prev: Tensor, sigma_prev: Tensor, gamma: Tensor) -> Tensor:
    """Noise level σ_γ of the sub-path point when ``x_t`` continues the forward process from
    ``x_{t-k}`` (x_t = r·x_{t-k} + √(1-r²)·z, r = α_t/α_{t-k}):
    ``σ_γ² = (r·σ_{t-k})² + γ²·(1 - r²)``. γ = 1 gives σ_t; γ = 0 gives r·σ_{t-k}. The signal
    level stays α_t. (SLAM's supplementary material; their script uses the same expression.)"""
    ratio = alpha_t / alpha_prev
    return ((ratio * sigma_prev) ** 2 + gamma ** 2 * (1 - ratio ** 2)).clamp(min=0).sqrt()


def consistency_output(x: Tensor, x0: Tensor, c_skip: Tensor, c_out: Tensor) -> Tensor:
    """The consistency function ``f(x, t) = c_skip(t)·x + c_out(t)·x̂0`` (LCMScheduler's ``denoised``)."""
    return c_skip * x + c_out * x0


def consistency_loss(prediction: Tensor, target: Tensor, kind: str = "l2", huber_c: float = 0.001) -> Tensor:
    """Scalar loss: ``l2`` = mean squared error; ``huber`` = pseudo-Huber
    ``mean(√((p-t)² + c²) - c)`` (the distillation scripts' ``huber_c`` 0.001). Computed in fp32."""
    diff = prediction.float() - target.float()
    if kind == "l2":
        return diff.pow(2).mean()
    if kind == "huber":
        return ((diff.pow(2) + huber_c ** 2).sqrt() - huber_c).mean()
    raise ValueError(f"loss {kind!r} is not supported; use one of {list(LOSS_KINDS)}")
