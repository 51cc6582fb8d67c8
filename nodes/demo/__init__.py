"""The demo model's data and judges: procedural product shots a model is trained on, and the
measurements that say whether its pictures follow the prompt."""

from __future__ import annotations

from graph_runtime import Node, hookimpl
from nodes import collect_nodes

MODULES: tuple[str, ...] = ("product_shots",)


@hookimpl
def nodeloom_register_nodes() -> list[type[Node]]:
    return collect_nodes(__name__, MODULES)
