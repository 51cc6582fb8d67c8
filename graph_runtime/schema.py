"""ComfyUI's per-class node schema (GET /object_info), derived from the node declaration."""

from __future__ import annotations

import logging
from typing import Any

from graph_runtime.context import HookContext
from graph_runtime.node import Node
from graph_runtime.registry import NodeRegistry


log = logging.getLogger(__name__)


def node_schema(cls: type[Node], ctx: HookContext) -> dict[str, Any]:
    """The ``/object_info`` entry of one node class, in ComfyUI's shape, with COMBO choices as
    they are in ``ctx``'s folders. ``long_running`` is our extra key (ComfyUI clients ignore it)."""
    sections: dict[str, dict[str, Any]] = {"required": {}, "optional": {}, "hidden": {}}
    for spec in cls.inputs:
        if spec.hidden:
            sections["hidden"][spec.name] = spec.type
            continue
        choices, reason = spec.listed_choices(ctx) if spec.type == "COMBO" else (None, None)
        if reason is not None:
            log.warning("node %s, input %s: %s", cls.__name__, spec.name, reason)
        sections["optional" if spec.optional else "required"][spec.name] = spec.schema(ctx, choices=choices)
    inputs = {key: value for key, value in sections.items() if value or key == "required"}
    order = {key: list(value) for key, value in inputs.items()}
    return {
        "input": inputs,
        "input_order": order,
        "output": [out.type for out in cls.outputs],
        "output_is_list": [out.is_list for out in cls.outputs],
        "output_name": [out.display_name for out in cls.outputs],
        "output_tooltips": [out.tooltip or "" for out in cls.outputs],
        "name": cls.__name__,
        "display_name": cls.title(),
        "description": cls.description,
        "python_module": cls.python_module,
        "category": cls.category,
        "output_node": cls.output_node,
        "deprecated": cls.deprecated,
        "experimental": cls.experimental,
        "long_running": cls.long_running,
    }


def object_info(registry: NodeRegistry, ctx: HookContext) -> dict[str, dict[str, Any]]:
    """Every registered class's schema, keyed by class_type. A COMBO whose choices cannot be
    listed (its callable raised) lists none, with a warning naming node and input; a class whose
    schema still cannot be built is left out, logged, rather than failing the whole listing."""
    info: dict[str, dict[str, Any]] = {}
    for name, cls in sorted(registry.nodes.items()):
        try:
            info[name] = node_schema(cls, ctx)
        except Exception as exc:  # noqa: BLE001 - one broken plugin node must not hide the others
            log.warning("node %s left out of the node list: %s: %s", name, type(exc).__name__, exc)
            log.debug("schema of node %s failed", name, exc_info=True)
    return info


def model_inputs(registry: NodeRegistry) -> dict[str, dict[str, str]]:
    """``{class_type: {input: models folder}}`` for inputs that pick a model file, so a process
    without the node classes can list their current choices and tell which models a workflow uses."""
    found: dict[str, dict[str, str]] = {}
    for name, cls in registry.nodes.items():
        folders = {spec.name: spec.model_folder for spec in cls.inputs if spec.model_folder}
        if folders:
            found[name] = folders
    return found
