"""Few-step consistency sampling: SLAMSampler (SLAM/LCM multistep consistency sampling on the shared sampling loop)."""

from __future__ import annotations

from graph_runtime import Node, hookimpl
from nodes import collect_nodes

MODULES: tuple[str, ...] = ("sampler",)


@hookimpl
def nodeloom_register_nodes() -> list[type[Node]]:
    return collect_nodes(__name__, MODULES)
