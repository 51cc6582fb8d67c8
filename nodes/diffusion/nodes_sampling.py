"""KSampler and KSamplerAdvanced (ComfyUI names and inputs) on diffusers schedulers."""

from __future__ import annotations

import time
from typing import Any

import torch

from graph_runtime.context import Context, HookContext
from graph_runtime.events import Preview
from graph_runtime.node import Combo, Float, Int, Link, Node, Output

from nodes.diffusion.inputs import SEED_MAX, cfg_input, check_sampler_widgets, sampler_inputs
from nodes.diffusion.models import Conditioning, DiffusionModel
from nodes.diffusion.preview import preview_jpeg
from nodes.diffusion.sampling import SampleSettings, sample
from nodes.infra.model_manager import manager_from


# Previews at most this often (plus the first and last step): a client cannot show more than a few
# frames a second, while encoding one per step costs fast samplers a noticeable share of each step.
PREVIEW_INTERVAL_S = 0.1


def step_progress(ctx: Context, family: str) -> Any:
    """The sampler nodes' ``on_step``: progress every step, a latent preview at most every
    ``PREVIEW_INTERVAL_S`` (and on the first and last step)."""
    last_preview = -PREVIEW_INTERVAL_S

    def on_step(step: int, total: int, latent: torch.Tensor) -> None:
        nonlocal last_preview
        preview = None
        now = time.monotonic()
        if step in (1, total) or now - last_preview >= PREVIEW_INTERVAL_S:
            preview = Preview(image_type="JPEG", data=preview_jpeg(latent, family))
            last_preview = now
        ctx.progress(step, total, preview)  # every step: also where an interrupt takes effect
    return on_step


class KSampler(Node):
    category = "sampling"
    description = ("Denoise a latent with a diffusers scheduler picked by ComfyUI sampler/scheduler names "
                   "(docs/samplers.md). Same seed, same image, whatever the batch size or device.")
    inputs = [Link("model", "MODEL"), Int("seed", 0, min=0, max=SEED_MAX, control_after_generate=True),
              Int("steps", 20, min=1, max=10000), cfg_input(), *sampler_inputs(),
              Link("positive", "CONDITIONING"), Link("negative", "CONDITIONING"), Link("latent_image", "LATENT"),
              Float("denoise", 1.0, min=0.0, max=1.0, step=0.01)]
    outputs = [Output("LATENT")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        return check_sampler_widgets(**widgets)

    def run(self, ctx: Context, *, model: DiffusionModel, seed: int, steps: int, cfg: float, sampler_name: str,
            scheduler: str, positive: Conditioning, negative: Conditioning, latent_image: dict[str, Any],
            denoise: float) -> tuple[Any, ...]:
        settings = SampleSettings(seed=seed, steps=steps, cfg=cfg, sampler_name=sampler_name, scheduler=scheduler,
                                  denoise=denoise)
        return (sample(manager_from(ctx.services), model, positive, negative, latent_image, settings,
                       on_step=step_progress(ctx, model.family)),)


class KSamplerAdvanced(Node):
    category = "sampling"
    description = ("KSampler over a window [start_at_step, end_at_step) of a steps-long schedule, with optional "
                   "noise and leftover noise: chain two for base/refiner-style split sampling.")
    inputs = [Link("model", "MODEL"), Combo("add_noise", ["enable", "disable"]),
              Int("noise_seed", 0, min=0, max=SEED_MAX, control_after_generate=True),
              Int("steps", 20, min=1, max=10000), cfg_input(), *sampler_inputs(),
              Link("positive", "CONDITIONING"), Link("negative", "CONDITIONING"), Link("latent_image", "LATENT"),
              Int("start_at_step", 0, min=0, max=10000), Int("end_at_step", 10000, min=0, max=10000),
              Combo("return_with_leftover_noise", ["disable", "enable"])]
    outputs = [Output("LATENT")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        return check_sampler_widgets(**widgets)

    def run(self, ctx: Context, *, model: DiffusionModel, add_noise: str, noise_seed: int, steps: int, cfg: float,
            sampler_name: str, scheduler: str, positive: Conditioning, negative: Conditioning,
            latent_image: dict[str, Any], start_at_step: int, end_at_step: int,
            return_with_leftover_noise: str) -> tuple[Any, ...]:
        settings = SampleSettings(seed=noise_seed, steps=steps, cfg=cfg, sampler_name=sampler_name,
                                  scheduler=scheduler, start_step=start_at_step, end_step=end_at_step,
                                  add_noise=add_noise == "enable",
                                  return_leftover_noise=return_with_leftover_noise == "enable")
        return (sample(manager_from(ctx.services), model, positive, negative, latent_image, settings,
                       on_step=step_progress(ctx, model.family)),)


NODES: list[type[Node]] = [KSampler, KSamplerAdvanced]
