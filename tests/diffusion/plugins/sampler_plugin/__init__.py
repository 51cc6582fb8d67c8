"""A test plugin using only the diffusion family's public hooks: a sampler and a denoiser hook.

- ``trailing_euler``: Euler with trailing timestep spacing, i.e. exactly the built-in ``euler``
  sampler with the ``simple`` scheduler (a checkable effect); it counts its builds.
- ``test_mid_residual``: adds ``test_residual`` (a float in a conditioning's extras, set by the
  plugin's ``ConditioningSetTestResidual`` node) times a fixed pattern to the UNet's mid-block output.
"""

from __future__ import annotations

from typing import Any

import torch

from graph_runtime import Context, Float, Link, Node, Output, hookimpl
from nodes.diffusion.denoiser import UNetCall, UNetInputs
from nodes.diffusion.samplers import DiffusersSampler

BUILDS: list[str] = []


class TrailingEuler(DiffusersSampler):
    def build(self, config: dict[str, Any], *, seed: int) -> Any:
        BUILDS.append("trailing_euler")
        return super().build(config, seed=seed)


class MidResidual:
    name = "test_mid_residual"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, call: UNetCall) -> UNetInputs | None:
        scales = [float(extras.get("test_residual", 0.0)) for extras in call.conditioning]
        if not any(scales):
            return None
        self.calls += 1
        rows = torch.tensor(scales).repeat_interleave(call.batch).to(call.sample)
        down, (channels, h, w) = _controlnet_shapes(call.unet_config, *call.sample.shape[-2:])
        # A fixed pattern, not a constant: the up blocks' group norms would cancel a constant.
        pattern = torch.randn(1, channels, h, w, generator=torch.Generator().manual_seed(0)).to(call.sample)
        # diffusers adds a mid-block residual only together with down-block ones (ControlNet's pair).
        zeros = tuple(call.sample.new_zeros(call.sample.shape[0], *shape) for shape in down)
        return UNetInputs(down_block_additional_residuals=zeros,
                          mid_block_additional_residual=rows[:, None, None, None] * pattern)


def _controlnet_shapes(config: Any, h: int, w: int) -> tuple[list[tuple[int, int, int]], tuple[int, int, int]]:
    """(C, h, w) of each down-block residual a ControlNet gives this UNet, and of the mid one."""
    channels = list(config["block_out_channels"])
    shapes = [(channels[0], h, w)]
    for level, ch in enumerate(channels):
        shapes += [(ch, h, w)] * int(config["layers_per_block"])
        if level < len(channels) - 1:
            h, w = (h + 1) // 2, (w + 1) // 2
            shapes.append((ch, h, w))
    return shapes, (channels[-1], h, w)


HOOK = MidResidual()


class ConditioningSetTestResidual(Node):
    category = "testing"
    description = "Mark a conditioning so the test denoiser hook adds `scale` to the mid-block residual."
    inputs = [Link("conditioning", "CONDITIONING"), Float("scale", 0.0, min=-10.0, max=10.0, step=0.1)]
    outputs = [Output("CONDITIONING")]

    def run(self, ctx: Context, *, conditioning: list[list[Any]], scale: float) -> tuple[Any, ...]:
        return ([[embeds, dict(extras, test_residual=scale)] for embeds, extras in conditioning],)


@hookimpl
def nodeloom_register_nodes() -> list[type[Node]]:
    return [ConditioningSetTestResidual]


@hookimpl
def nodeloom_register_samplers() -> dict[str, Any]:
    return {"trailing_euler": TrailingEuler("EulerDiscreteScheduler", {"timestep_spacing": "trailing"})}


@hookimpl
def nodeloom_register_denoiser_hooks() -> list[Any]:
    return [HOOK]
