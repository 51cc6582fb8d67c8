"""Few-step consistency sampling: SLAM/LCM (SLAMSampler, ModelSamplingDiscrete, the lcm sampler)."""

from __future__ import annotations

from graph_runtime import Node, hookimpl
from nodes import collect_nodes

MODULES: tuple[str, ...] = ("sampler", "model_sampling")


@hookimpl
def nodeloom_register_nodes() -> list[type[Node]]:
    return collect_nodes(__name__, MODULES)
