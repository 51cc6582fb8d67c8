"""Input declarations repeated across the diffusion nodes, defined once (ComfyUI's values)."""

from __future__ import annotations

from typing import Any

from graph_runtime.node import Combo, Float, Int, InputSpec

from nodes.diffusion.samplers import SAMPLERS, SCHEDULER_NAMES, check_combination

SEED_MAX = 2**64 - 1


def cfg_input() -> InputSpec:
    return Float("cfg", 8.0, min=0.0, max=100.0, step=0.1, round=0.01)


def sampler_inputs() -> list[InputSpec]:
    """``sampler_name`` (built-ins and plugin samplers, listed when asked) and ``scheduler``."""
    return [Combo("sampler_name", lambda ctx: SAMPLERS.names()), Combo("scheduler", SCHEDULER_NAMES)]


def check_sampler_widgets(**widgets: Any) -> str | None:
    """validate_inputs of the sampler nodes: the combination must be runnable, and the schedule
    fit the sampler's distillation grid (LCM, TCD)."""
    sampler, scheduler = widgets.get("sampler_name"), widgets.get("scheduler")
    if sampler is None or scheduler is None:
        return None  # linked from another node: checked when the node runs
    if (problem := check_combination(sampler, scheduler)) is not None:
        return problem
    steps, denoise = widgets.get("steps"), widgets.get("denoise", 1.0)
    if steps is None or denoise is None:
        return None
    return SAMPLERS.schedule_problem(sampler, int(steps), float(denoise))


def tile_inputs(tile_step: int) -> list[InputSpec]:
    """VAEDecodeTiled/VAEEncodeTiled's tile inputs; ``temporal_*`` only matter for video VAEs
    and are accepted so ComfyUI workflows validate."""
    return [Int("tile_size", 512, min=64, max=4096, step=tile_step), Int("overlap", 64, min=0, max=4096, step=32),
            Int("temporal_size", 64, min=8, max=4096, step=4, optional=True),
            Int("temporal_overlap", 8, min=4, max=4096, step=4, optional=True)]
