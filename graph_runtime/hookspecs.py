"""Plugin hook specifications. Built-in nodes register through these hooks too.

A plugin is a module (or package) that defines functions named like the specs below, decorated
with ``graph_runtime.hookimpl``. It is found through the ``nodeloom.plugins`` entry-point group or
as a package in the plugins folder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from graph_runtime.node import Node

PROJECT = "nodeloom"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def nodeloom_register_nodes() -> list[type[Node]]:  # type: ignore[empty-body]
    """Return the node classes this plugin provides. Class names are the ``class_type`` used in
    workflows and must be unique across plugins; a clash skips the later plugin's node."""


@hookspec
def nodeloom_register_types() -> dict[str, str]:  # type: ignore[empty-body]
    """Return the link types this plugin introduces, as ``{TYPE_NAME: description}``."""


@hookspec
def nodeloom_startup(config: dict[str, Any]) -> None:
    """Called once per process after every plugin is registered (``config``: the runtime's
    settings, read-only). Set up long-lived resources lazily rather than here when possible."""
