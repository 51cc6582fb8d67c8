"""The demo model: `nodeloom demo` and its bundled models (``models/``, on every command's model
path), the procedural product shots they were trained on, and the measurements that say whether
its pictures follow the prompt."""

from __future__ import annotations

import argparse
from typing import Any

from graph_runtime import Node, hookimpl
from nodes import collect_nodes

MODULES: tuple[str, ...] = ("product_shots",)


@hookimpl
def nodeloom_register_nodes() -> list[type[Node]]:
    return collect_nodes(__name__, MODULES)


@hookimpl
def nodeloom_add_commands(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    from nodes.demo.command import add_command

    add_command(subparsers)


@hookimpl
def nodeloom_model_paths() -> dict[str, str]:
    from nodes.demo.command import MODELS_YAML

    return {"nodeloom_demo": str(MODELS_YAML)}
