"""Legacy group nodes expanded into the nodes they group, as ComfyUI's frontend did.

Until group nodes became subgraphs (frontend 1.2x), the editor saved a group as one node of type
``workflow>Name`` (``workflow/Name`` before 1.2.63) whose definition sits in
``extra.groupNodes[Name]``: the inner ``nodes`` (each with its ``index``), ``links`` as
``[from index | null, from slot, to index, to slot, original id, type]`` (null: fed from outside)
and ``external`` outputs ``[index, slot, type]``. The group node's own widgets, inputs and outputs
are derived from that definition (ComfyUI_frontend ``extensions/core/groupNode.ts``,
``GroupNodeConfig``), in this order:

- widgets: each inner node's widgets in turn (with their control and upload slots), then, after
  all nodes, the widgets an inner node had turned into sockets and that no inner link feeds;
- inputs: each inner node's sockets that no inner link feeds, then those converted widgets;
- outputs: each inner node's outputs that are not used inside the group (or are also linked
  outside it, or marked visible in the definition's ``config``).

Expansion puts the inner nodes in the workflow with ids ``"<group node id>:<index>"`` (as
ComfyUI's prompts name them), each widget value from the group node, and the group node's links
re-attached to the inner nodes; ``ui_format`` then converts the result as any workflow.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from graph_runtime.context import HookContext
from graph_runtime.formats import WorkflowFormatError
from graph_runtime.node import Node
from graph_runtime.registry import NodeRegistry
from graph_runtime.widget_layout import MISSING, WidgetSlot, node_slots, read_slots, widget_values

PREFIXES = ("workflow>", "workflow/")
FRONTEND_NODES = ("PrimitiveNode", "Reroute")


@dataclass
class _GroupLayout:
    """Where a group node's widgets, inputs and outputs lead inside it."""

    name: str
    nodes: list[dict[str, Any]]
    # The node class of each inner node (None for PrimitiveNode and Reroute).
    classes: list[type[Node] | None] = field(default_factory=list)
    inner_links: list[tuple[int, int, int, int, str]] = field(default_factory=list)
    widgets: list[tuple[int, WidgetSlot]] = field(default_factory=list)
    inputs: list[tuple[int, int]] = field(default_factory=list)
    outputs: list[tuple[int, int]] = field(default_factory=list)


def group_name(node_type: str) -> str | None:
    return next((node_type[len(p):] for p in PREFIXES if node_type.startswith(p)), None)


def expand_group_nodes(document: dict[str, Any], registry: NodeRegistry, ctx: HookContext) -> dict[str, Any]:
    """``document`` with every group node replaced by its inner nodes (a copy; the document is
    left as it is). Raises WorkflowFormatError naming the node and group for a definition that
    is missing, names a node type no plugin provides, or cannot be read."""
    definitions = (document.get("extra") or {}).get("groupNodes") or {}
    if not any(isinstance(n, dict) and group_name(str(n.get("type"))) for n in document.get("nodes") or []):
        return document
    document = copy.deepcopy(document)
    layouts: dict[str, _GroupLayout] = {}
    nodes: list[Any] = []
    links = [_as_array(link) for link in document.get("links") or [] if link is not None]
    for node in document["nodes"]:
        name = group_name(str(node.get("type"))) if isinstance(node, dict) else None
        if name is None:
            nodes.append(node)
            continue
        if not isinstance(definitions.get(name), dict):
            raise WorkflowFormatError(f"group node {node.get('id')} ({node['type']!r}): the workflow has no "
                                      f"definition of group {name!r} in extra.groupNodes")
        try:
            if name not in layouts:
                layouts[name] = _layout(name, definitions[name], registry)
            nodes += _expand(node, layouts[name], links, ctx)
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            if isinstance(exc, WorkflowFormatError):
                raise
            # A damaged definition or group node (a value of the wrong JSON type): name both.
            raise WorkflowFormatError(f"group node {node.get('id')} ({node['type']!r}): cannot read it or "
                                      f"the definition of group {name!r} in extra.groupNodes: "
                                      f"{type(exc).__name__}: {exc}") from None
    return {**document, "nodes": nodes, "links": links}


def _as_array(link: Any) -> list[Any]:
    if isinstance(link, dict) and "origin_id" in link:
        return [link.get("id"), link["origin_id"], link.get("origin_slot", 0), link.get("target_id"),
                link.get("target_slot", 0), link.get("type", "*")]
    if not isinstance(link, list) or len(link) < 5:
        raise WorkflowFormatError(f"unreadable link {link!r:.120}: expected [id, origin, slot, target, "
                                  "slot, type] or {id, origin_id, origin_slot, …}")
    return list(link)


def _layout(name: str, definition: dict[str, Any], registry: NodeRegistry) -> _GroupLayout:
    where = f"group {name!r}"
    layout = _GroupLayout(name, [n for n in definition.get("nodes") or [] if isinstance(n, dict)])
    for raw in definition.get("links") or []:
        if isinstance(raw, list) and len(raw) >= 4 and raw[0] is not None:
            layout.inner_links.append((int(raw[0]), int(raw[1]), int(raw[2]), int(raw[3]),
                                       str(raw[5]) if len(raw) > 5 else "*"))
    fed = {(to, slot) for _, _, to, slot, _ in layout.inner_links}
    used = {(origin, slot) for origin, slot, _, _, _ in layout.inner_links}
    external = {(int(e[0]), int(e[1])) for e in definition.get("external") or [] if isinstance(e, list)}
    config = definition.get("config") or {}
    converted: list[tuple[int, WidgetSlot, int]] = []
    for index, node in enumerate(layout.nodes):
        kind = str(node.get("type"))
        layout.classes.append(registry.get(kind) if kind not in FRONTEND_NODES else None)
        if kind == "PrimitiveNode":
            target = next(((to, slot) for origin, _, to, slot, _ in layout.inner_links if origin == index), None)
            if target is not None:
                layout.widgets.append((index, WidgetSlot(_fed_widget(layout, *target, registry, where), controlled=True)))
            continue
        if kind == "Reroute":
            continue  # a pipe between inner nodes; nothing of the group node's
        cls = registry.get(kind)
        if cls is None:
            raise WorkflowFormatError(f"{where}: no loaded plugin provides its node type {kind!r}")
        sockets = _socket_slots(node, cls)
        turned = {name for name, slot in sockets.items() if cls.input_spec(name) and cls.input_spec(name).is_widget}
        layout.widgets += [(index, slot) for slot in node_slots(cls, skip=frozenset(turned))]
        for input_name, slot in sockets.items():
            spec = cls.input_spec(input_name)
            if spec is not None and spec.is_widget:
                converted.append((index, WidgetSlot(spec), slot))
            elif (index, slot) not in fed:
                layout.inputs.append((index, slot))
        for slot in range(len(cls.outputs)):
            shown = (config.get(str(index)) or {}).get("output", {}).get(str(slot), {}).get("visible")
            if shown if shown is not None else ((index, slot) not in used or (index, slot) in external):
                layout.outputs.append((index, slot))
    for index, widget, slot in converted:
        if (index, slot) not in fed:
            layout.widgets.append((index, widget))
            layout.inputs.append((index, slot))
    return layout


def _socket_slots(node: dict[str, Any], cls: type[Node]) -> dict[str, int]:
    """Input name -> slot of the inner node's sockets: its links, then widgets turned into sockets."""
    saved = node.get("inputs")
    if isinstance(saved, list) and saved:
        return {(entry.get("widget") or {}).get("name") or entry.get("name"): slot
                for slot, entry in enumerate(saved) if isinstance(entry, dict)}
    links = [s for s in cls.inputs if not s.hidden and not s.is_widget]
    return {s.name: slot for slot, s in enumerate([s for s in links if not s.optional] + [s for s in links if s.optional])}


def _fed_widget(layout: _GroupLayout, to: int, slot: int, registry: NodeRegistry, where: str) -> Any:
    """The declaration of the widget a PrimitiveNode feeds (its value widget takes its shape)."""
    node = layout.nodes[to] if 0 <= to < len(layout.nodes) else {}
    cls = registry.get(str(node.get("type")))
    entry = (node.get("inputs") or [])[slot] if slot < len(node.get("inputs") or []) else {}
    spec = cls.input_spec((entry.get("widget") or {}).get("name") or entry.get("name", "")) if cls else None
    if spec is None:
        raise WorkflowFormatError(f"{where}: a PrimitiveNode feeds input {slot} of inner node {to}, "
                                  "which is not a widget of a known node type")
    return spec


def _expand(group: dict[str, Any], layout: _GroupLayout, links: list[list[Any]],
            ctx: HookContext) -> list[dict[str, Any]]:
    gid = group.get("id")
    inner = [{**copy.deepcopy(node), "id": f"{gid}:{index}"} for index, node in enumerate(layout.nodes)]
    for node in inner:
        node["inputs"] = [dict(e) for e in node.get("inputs") or [] if isinstance(e, dict)]
        if group.get("mode") in (2, 4):
            node["mode"] = group["mode"]  # a muted or bypassed group mutes or bypasses its nodes
    saved = group.get("widgets_values")
    values = read_slots(saved if isinstance(saved, list) else [], [slot for _, slot in layout.widgets], ctx)
    given: dict[int, dict[str, Any]] = {}
    for (index, slot), value in zip(layout.widgets, values):
        if value is not MISSING:
            given.setdefault(index, {})[slot.spec.name] = value
    for index, node in enumerate(inner):
        if node["type"] == "PrimitiveNode":
            if index in given:
                node["widgets_values"] = list(given[index].values())
            continue
        cls = layout.classes[index]
        if cls is not None:
            node["widgets_values"] = {**widget_values(node, cls, ctx), **given.get(index, {})}
            node.pop("widgets_values_named", None)
    for number, (origin, origin_slot, to, slot, kind) in enumerate(layout.inner_links):
        link_id = f"{gid}:link{number}"
        links.append([link_id, f"{gid}:{origin}", origin_slot, f"{gid}:{to}", slot, kind])
        _attach(inner[to], slot, link_id)
    for link in links:
        if str(link[3]) == str(gid) and 0 <= link[4] < len(layout.inputs):
            to, slot = layout.inputs[link[4]]
            link[3], link[4] = f"{gid}:{to}", slot
            _attach(inner[to], slot, link[0])
        if str(link[1]) == str(gid) and 0 <= link[2] < len(layout.outputs):
            origin, slot = layout.outputs[link[2]]
            link[1], link[2] = f"{gid}:{origin}", slot
    return inner


def _attach(node: dict[str, Any], slot: int, link_id: Any) -> None:
    while len(node["inputs"]) <= slot:
        node["inputs"].append({"name": f"input{len(node['inputs'])}", "type": "*", "link": None})
    node["inputs"][slot]["link"] = link_id
