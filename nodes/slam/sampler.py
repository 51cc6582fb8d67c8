"""SLAMSampler: few-step multistep consistency sampling, as SLAM and LCM sample.

The rule is diffusers' ``LCMScheduler`` (Luo et al. 2023, "Latent Consistency Models",
arXiv 2310.04378, Algorithm 3): at each of a few timesteps taken from the 50-step distillation grid
(``t = 999, 759, 499, 259`` for 4 steps, the "trailing" end of the schedule), predict the clean
latent with the consistency boundary scalings, then re-noise it to the next timestep with fresh
noise. SLAM (Xu et al. 2024, "Accelerating Image Generation with Sub-path Linear Approximation
Model", arXiv 2404.13903) trains a LoRA for exactly this sampler: 4 steps, guidance 1.0.

It runs through the diffusion pack's one sampling loop (``nodes.diffusion.sampling.sample``) with
the registry's ``lcm`` sampler, so everything that loop does applies unchanged: img2img through
``denoise``, inpainting through the latent's ``noise_mask``, per-sample seeds, previews,
interrupts, and every denoiser hook (ControlNet residuals).
"""

from __future__ import annotations

from typing import Any

import torch

from graph_runtime.context import Context, HookContext
from graph_runtime.node import Float, Int, Link, Node, Output

from nodes.diffusion.inputs import SEED_MAX
from nodes.diffusion.models import Conditioning, DiffusionModel
from nodes.diffusion.nodes_latent import SetLatentNoiseMask
from nodes.diffusion.nodes_sampling import step_progress
from nodes.diffusion.samplers import DISTILLATION_GRID, SAMPLERS
from nodes.diffusion.sampling import SampleSettings, sample
from nodes.infra.model_manager import manager_from

SAMPLER = "lcm"
# LCMScheduler always samples the trailing end of its grid; "sgm_uniform" (timestep_spacing
# "trailing") says so in the settings, as SLAM's published inference code configures it.
SCHEDULER = "sgm_uniform"
# LCMScheduler picks its steps from LCM's 50-step distillation grid (original_inference_steps).
MAX_SCHEDULE = DISTILLATION_GRID


def schedule_problem(steps: int, denoise: float) -> str | None:
    """Why ``steps`` at ``denoise`` cannot run (None when it can): with denoise < 1 the schedule is
    ``int(steps / denoise)`` long (ComfyUI's meaning) and must fit LCM's 50-step grid."""
    return SAMPLERS.schedule_problem(SAMPLER, steps, denoise)


class SLAMSampler(Node):
    category = "sampling"
    description = ("Few-step consistency sampling for models with an LCM/SLAM LoRA or a distilled UNet (LCMScheduler, "
                   "trailing timesteps). cfg 1.0 = no classifier-free guidance, one UNet pass per step; > 1 turns it "
                   "on (distilled UNets with a guidance embedding get it as timestep_cond instead). denoise < 1 is "
                   "img2img; a MASK (or the latent's noise_mask) regenerates only where it is 1. Output: LATENT.")
    inputs = [Link("model", "MODEL"), Link("positive", "CONDITIONING"), Link("negative", "CONDITIONING"),
              Link("latent_image", "LATENT"), Int("seed", 0, min=0, max=SEED_MAX, control_after_generate=True),
              Int("steps", 4, min=1, max=MAX_SCHEDULE, tooltip="4 for SLAM; 2-8 for LCM"),
              Float("cfg", 1.0, min=0.0, max=100.0, step=0.1, round=0.01,
                    tooltip="1.0: no classifier-free guidance (one UNet pass per step)"),
              Float("denoise", 1.0, min=0.0, max=1.0, step=0.01),
              Link("mask", "MASK", optional=True,
                   tooltip="area to regenerate ([B,H,W] or [H,W], 0..1, any size); replaces the latent's noise_mask")]
    outputs = [Output("LATENT")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        steps, denoise = widgets.get("steps"), widgets.get("denoise")
        if steps is None or denoise is None:
            return None  # linked from another node: checked when the node runs
        return schedule_problem(int(steps), float(denoise))

    def run(self, ctx: Context, *, model: DiffusionModel, positive: Conditioning, negative: Conditioning,
            latent_image: dict[str, Any], seed: int, steps: int, cfg: float, denoise: float,
            mask: torch.Tensor | None = None) -> tuple[Any, ...]:
        if (problem := schedule_problem(steps, denoise)) is not None:
            raise ValueError(problem)
        latent = latent_image
        batch = latent_image["samples"].shape[0]
        if mask is not None:
            _check_mask(mask, batch, "mask")
            latent = SetLatentNoiseMask().run(ctx, samples=latent_image, mask=mask)[0]
        elif latent_image.get("noise_mask") is not None:  # SetLatentNoiseMask upstream
            _check_mask(latent_image["noise_mask"], batch, "latent_image's noise_mask")
        settings = SampleSettings(seed=seed, steps=steps, cfg=cfg, sampler_name=SAMPLER, scheduler=SCHEDULER,
                                  denoise=denoise)
        return (sample(manager_from(ctx.services), model, positive, negative, latent, settings,
                       on_step=step_progress(ctx, model.family)),)


def _check_mask(mask: torch.Tensor, batch: int, name: str) -> None:
    """Raises ValueError for a mask that is not [H,W]/[B,H,W]/[B,1,H,W], is empty, holds NaN/inf
    (which would turn the whole latent to NaN) or has more masks than latents."""
    if mask.ndim not in (2, 3, 4) or (mask.ndim == 4 and mask.shape[1] != 1):
        raise ValueError(f"{name} must be [H,W] or [B,H,W], got shape {list(mask.shape)}")
    if mask.numel() == 0:
        raise ValueError(f"{name} is empty (shape {list(mask.shape)})")
    if not bool(torch.isfinite(mask).all()):
        raise ValueError(f"{name} holds NaN or infinite values; a mask is 0..1")
    masks = 1 if mask.ndim == 2 else mask.shape[0]
    if masks > batch:
        raise ValueError(f"{name} holds {masks} masks but latent_image only {batch} latents")


NODES: list[type[Node]] = [SLAMSampler]
