"""Core nodes that need no model weights: image and mask operations, image files, primitives."""

from __future__ import annotations

import importlib

from graph_runtime import Node, hookimpl

MODULES: tuple[str, ...] = ("primitives", "image", "mask", "image_io")


@hookimpl
def nodeloom_register_nodes() -> list[type[Node]]:
    classes: list[type[Node]] = []
    for name in MODULES:
        classes += importlib.import_module(f"{__name__}.{name}").NODES
    return classes
