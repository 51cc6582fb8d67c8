"""Training as long-running nodes: LoRA, SLAM distillation, EcomXL fine-tune and fusion, ESRGAN."""

from __future__ import annotations

from graph_runtime import Node, hookimpl
from nodes import collect_nodes

MODULES: tuple[str, ...] = ("merge", "checkpoint_save")


@hookimpl
def nodeloom_register_nodes() -> list[type[Node]]:
    return collect_nodes(__name__, MODULES)
