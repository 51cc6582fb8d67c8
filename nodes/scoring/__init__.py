"""Preference scoring and best-of-N ranking (PickScore)."""

from __future__ import annotations

from graph_runtime import Node, hookimpl
from nodes import collect_nodes

MODULES: tuple[str, ...] = ("pickscore",)


@hookimpl
def nodeloom_register_types() -> dict[str, str]:
    return {"CLIP_SCORER": "a CLIP model and processor that score images against a prompt (PickScore)"}


@hookimpl
def nodeloom_register_nodes() -> list[type[Node]]:
    return collect_nodes(__name__, MODULES)
