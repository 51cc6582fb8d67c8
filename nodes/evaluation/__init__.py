"""Evaluation in the graph: prompt sets, sweeps, CLIP score, FID, preference scores, tables."""

from __future__ import annotations

from graph_runtime import Node, hookimpl
from nodes import collect_nodes

MODULES: tuple[str, ...] = ("prompt_set", "sweep", "image_sets", "clip_metrics", "fid", "aesthetic", "table")


@hookimpl
def nodeloom_register_types() -> dict[str, str]:
    return {"EVAL_ROW": "one row of an evaluation: the prompt, swept value and seed that made an image, and the "
                        "metrics measured on it"}


@hookimpl
def nodeloom_register_nodes() -> list[type[Node]]:
    return collect_nodes(__name__, MODULES)
