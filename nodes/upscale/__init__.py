"""Upscale models through spandrel: UpscaleModelLoader, ImageUpscaleWithModel (tiled)."""

from __future__ import annotations

from graph_runtime import Node, hookimpl
from nodes import collect_nodes

MODULES: tuple[str, ...] = ("nodes_upscale",)


@hookimpl
def nodeloom_register_nodes() -> list[type[Node]]:
    return collect_nodes(__name__, MODULES)
