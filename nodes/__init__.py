"""NodeLoom's built-in node library.

Its packs (``nodes.core``, ``nodes.diffusion``) are plugins like any other: each registers its node
classes through the ``nodeloom_register_nodes`` hook and is installed in the ``nodeloom.plugins``
entry-point group, where the registry finds it as it finds third-party packs.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from graph_runtime import Node


def collect_nodes(package: str, modules: Iterable[str]) -> list[type[Node]]:
    """The ``NODES`` lists of a pack's modules, in order (imported only when the pack registers)."""
    classes: list[type[Node]] = []
    for name in modules:
        classes += importlib.import_module(f"{package}.{name}").NODES
    return classes
