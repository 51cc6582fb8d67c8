"""Lay out an API-format prompt as a UI-format (v0.4) workflow the browser editor opens.

The reverse of ``graph_runtime.ui_format`` for what the API format keeps: nodes, links, widget
values and titles. Widget values are written as ComfyUI's frontend 1.x saves them: positional
over the node's widgets (required, then optional), a seed-like INT followed by its
control_after_generate value ("fixed", so the workflow reproduces its result), no upload-button
slot. A widget fed by a link becomes an input socket carrying ``widget: {name}``. Nodes are placed
in columns by their depth in the graph. ``ui_to_api`` of the result gives the prompt back.
"""

from __future__ import annotations

from typing import Any

from graph_runtime.dag import LinkGraph
from graph_runtime.formats import ApiPrompt, WorkflowFormatError, is_link
from graph_runtime.node import InputSpec, Node
from graph_runtime.registry import NodeRegistry
from graph_runtime.widget_layout import SEED_NAMES, widget_specs
from graph_runtime.validation import node_sort_key

COLUMN_WIDTH, ROW_HEIGHT, NODE_WIDTH = 380, 300, 320


def api_to_ui(prompt: ApiPrompt, registry: NodeRegistry) -> dict[str, Any]:
    """The v0.4 UI workflow of ``prompt``. Raises WorkflowFormatError naming every node whose
    class no loaded plugin provides, and any link to a node or output that does not exist."""
    unknown = [f"node {nid} ({node.get('class_type')!r})" for nid, node in prompt.items()
               if registry.get(str(node.get("class_type"))) is None]
    if unknown:
        raise WorkflowFormatError(f"cannot lay out the workflow: no loaded plugin provides {', '.join(unknown)}")
    ids = {node_id: index + 1 for index, node_id in enumerate(sorted(prompt, key=node_sort_key))}
    positions = _layout(prompt)
    nodes = {node_id: _ui_node(ids[node_id], prompt[node_id], registry.nodes[prompt[node_id]["class_type"]],
                               positions[node_id]) for node_id in sorted(prompt, key=node_sort_key)}
    links: list[list[Any]] = []
    for node_id, node in prompt.items():
        cls = registry.nodes[node["class_type"]]
        for name, value in node.get("inputs", {}).items():
            if not is_link(value):
                continue
            source = str(value[0])
            if source not in prompt:
                raise WorkflowFormatError(f"node {node_id} input {name!r}: links to node {source}, which is not in the prompt")
            origin_cls = registry.nodes[prompt[source]["class_type"]]
            slot = int(value[1])
            if not 0 <= slot < len(origin_cls.outputs):
                raise WorkflowFormatError(f"node {node_id} input {name!r}: node {source} has no output {slot}")
            link_id = len(links) + 1
            target_slot = _socket(nodes[node_id], name, cls.input_spec(name))
            nodes[node_id]["inputs"][target_slot]["link"] = link_id
            nodes[source]["outputs"][slot]["links"].append(link_id)
            links.append([link_id, ids[source], slot, ids[node_id], target_slot, origin_cls.outputs[slot].type])
    return {"last_node_id": len(ids), "last_link_id": len(links), "nodes": list(nodes.values()),
            "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def _ui_node(ui_id: int, node: dict[str, Any], cls: type[Node], pos: tuple[int, int]) -> dict[str, Any]:
    given = node.get("inputs", {})
    sockets = [s for s in cls.inputs if not s.hidden and not s.is_widget]
    sockets = [s for s in sockets if not s.optional] + [s for s in sockets if s.optional]
    values: list[Any] = []
    for spec in widget_specs(cls):
        value = given.get(spec.name, spec.default)
        values.append(spec.default if is_link(value) else value)
        if spec.options.get("control_after_generate") or (spec.type == "INT" and spec.name in SEED_NAMES):
            values.append("fixed")
    title = (node.get("_meta") or {}).get("title") or cls.title()
    return {"id": ui_id, "type": cls.__name__, "title": title, "pos": list(pos), "size": [NODE_WIDTH, 120],
            "flags": {}, "order": ui_id - 1, "mode": 0,
            "inputs": [{"name": s.name, "type": s.type, "link": None} for s in sockets],
            "outputs": [{"name": out.display_name, "type": out.type, "links": [], "slot_index": index}
                        for index, out in enumerate(cls.outputs)],
            "properties": {"Node name for S&R": cls.__name__}, "widgets_values": values}


def _socket(ui_node: dict[str, Any], name: str, spec: InputSpec | None) -> int:
    """The input slot of ``name``, added (as a widget turned socket) for a linked widget."""
    for slot, entry in enumerate(ui_node["inputs"]):
        if entry["name"] == name:
            return slot
    if spec is None:
        raise WorkflowFormatError(f"node {ui_node['id']} ({ui_node['type']}) has no input {name!r}")
    ui_node["inputs"].append({"name": name, "type": spec.type, "link": None, "widget": {"name": name}})
    return len(ui_node["inputs"]) - 1


def _layout(prompt: ApiPrompt) -> dict[str, tuple[int, int]]:
    """Each node's column is its longest path from a source node; rows follow node id order."""
    graph = LinkGraph.of(prompt)
    depth: dict[str, int] = {}
    for node_id in _topological(graph):
        depth[node_id] = max((depth[p] + 1 for p in graph.parents[node_id]), default=0)
    rows: dict[int, int] = {}
    positions = {}
    for node_id in sorted(prompt, key=lambda n: (depth[n], node_sort_key(n))):
        row = rows.get(depth[node_id], 0)
        rows[depth[node_id]] = row + 1
        positions[node_id] = (50 + depth[node_id] * COLUMN_WIDTH, 50 + row * ROW_HEIGHT)
    return positions


def _topological(graph: LinkGraph) -> list[str]:
    try:
        return graph.order(node_sort_key)
    except ValueError:
        raise WorkflowFormatError("the prompt's links form a cycle; it cannot be laid out") from None
