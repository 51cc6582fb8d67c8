"""Core nodes that need no model weights: image and mask operations, image files, primitives."""

from __future__ import annotations

from graph_runtime import Node, Services, hookimpl
from nodes import collect_nodes

MODULES: tuple[str, ...] = ("primitives", "image", "mask", "image_io")


@hookimpl
def nodeloom_register_nodes() -> list[type[Node]]:
    return collect_nodes(__name__, MODULES)


@hookimpl
def nodeloom_warmup(services: Services) -> None:
    """One tiny image through what an image workflow touches first: tensor creation, resize,
    invert, and PNG encoding (in memory)."""
    del services
    from nodes.core.imaging import warm_up

    warm_up()
