"""Convert ComfyUI's UI-format workflows (what the node editor saves) to the API format.

ComfyUI does this only in the browser (``graphToPrompt``); we do it on the server and in the CLI
with the node schemas, so a saved editor file runs headless. Handled as the frontend does:

- ``widgets_values`` are positional over the node's widget inputs (required, then optional, in
  declaration order), with the slots of frontend-only widgets in every form the editor saved them
  (``graph_runtime.widget_layout``). A widget converted to a socket keeps its slot.
- mode 2 (muted) nodes are dropped; mode 4 (bypassed) nodes hand their input of the link's type
  through to their consumers.
- Frontend-only nodes: Reroute is followed to its source, PrimitiveNode's value goes into the
  widget it feeds, Note/MarkdownNote are dropped.
- Subgraphs (``definitions.subgraphs``) are flattened; inner node ids become "outer:inner".
- Legacy group nodes (``workflow>Name``, defined in ``extra.groupNodes``) are expanded first
  (``graph_runtime.group_nodes``); inner node ids become "group:index", as ComfyUI names them.

v0.4 links are arrays ``[id, origin, origin_slot, target, target_slot, type]``; v1 links (and
subgraph interiors) are objects ``{id, origin_id, origin_slot, target_id, target_slot, type}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from graph_runtime.context import HookContext
from graph_runtime.formats import ApiPrompt, WorkflowFormatError
from graph_runtime.group_nodes import expand_group_nodes
from graph_runtime.node import Node
from graph_runtime.registry import NodeRegistry
from graph_runtime.widget_layout import widget_values

MUTED, BYPASSED = 2, 4
SUBGRAPH_INPUT_ID, SUBGRAPH_OUTPUT_ID = -10, -20
DROPPED_TYPES = frozenset({"Note", "MarkdownNote"})
# Deeper nesting than this means a subgraph that (directly or not) contains itself.
MAX_SUBGRAPH_DEPTH = 16


@dataclass(frozen=True)
class _Link:
    origin: int | str
    origin_slot: int
    target: int | str
    target_slot: int
    type: str


@dataclass
class _Scope:
    """One graph level: the top-level workflow or the interior of one subgraph instance."""

    prefix: str
    nodes: dict[str, dict[str, Any]]
    links: dict[str, _Link]
    definitions: dict[str, dict[str, Any]]
    # The folders computed COMBO choices are listed from.
    ctx: HookContext
    parent: _Scope | None = None
    # The subgraph node (in ``parent``) this scope is the interior of.
    instance: dict[str, Any] | None = None
    depth: int = 0

    def full_id(self, node_id: Any) -> str:
        return f"{self.prefix}{node_id}"

    def input_link(self, node: dict[str, Any], slot: int) -> _Link | None:
        inputs = node.get("inputs") or []
        if not 0 <= slot < len(inputs) or not isinstance(inputs[slot], dict):
            return None
        link_id = inputs[slot].get("link")
        return self.links.get(str(link_id)) if link_id is not None else None

    def child(self, instance: dict[str, Any]) -> _Scope:
        if self.depth >= MAX_SUBGRAPH_DEPTH:
            raise WorkflowFormatError(
                f"subgraph node {self.full_id(instance.get('id'))}: subgraphs nested more than "
                f"{MAX_SUBGRAPH_DEPTH} deep (does a subgraph contain itself?)")
        definition = self.definitions[instance["type"]]
        return _Scope(prefix=f"{self.full_id(instance['id'])}:",
                      nodes=_index_nodes(definition.get("nodes") or [], definition.get("name", "subgraph")),
                      links=_index_links(definition.get("links") or []), definitions=self.definitions,
                      ctx=self.ctx, parent=self, instance=instance, depth=self.depth + 1)


@dataclass(frozen=True)
class _Constant:
    """A value fed by a PrimitiveNode (or an unlinked promoted subgraph widget)."""

    value: Any


# What a UI link resolves to: a real node's output [id, slot], a constant, or nothing.
_Resolved = list[Any] | _Constant | None


def ui_to_api(document: dict[str, Any], registry: NodeRegistry, ctx: HookContext) -> ApiPrompt:
    """The API-format prompt of a UI-format workflow; COMBO choices (which tell a saved control
    value from a choice) are those of ``ctx``'s folders. Raises WorkflowFormatError naming the
    node for node types no loaded plugin provides and for structure we cannot read."""
    if not isinstance(document.get("nodes"), list):
        raise WorkflowFormatError("a UI-format workflow needs a 'nodes' list")
    _check_containers(document)
    try:
        return _convert(document, registry, ctx)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
        if isinstance(exc, WorkflowFormatError):
            raise
        # A damaged file (a value of the wrong JSON type somewhere): a format error, never a crash.
        raise WorkflowFormatError(f"cannot read the UI workflow: {_reason(exc)}") from None


def _convert(document: dict[str, Any], registry: NodeRegistry, ctx: HookContext) -> ApiPrompt:
    document = expand_group_nodes(document, registry, ctx)
    definitions = {str(d.get("id")): d for d in (document.get("definitions") or {}).get("subgraphs") or []
                   if isinstance(d, dict)}
    root = _Scope(prefix="", nodes=_index_nodes(document["nodes"], "workflow"),
                  links=_index_links(document.get("links") or []), definitions=definitions, ctx=ctx)
    real = list(_real_nodes(root))
    unknown = [(scope.full_id(node["id"]), node.get("type")) for scope, node in real
               if registry.get(str(node.get("type"))) is None]
    if unknown:
        listed = ", ".join(f"node {nid} ({kind!r})" for nid, kind in unknown)
        raise WorkflowFormatError(
            f"cannot convert the UI workflow: no loaded plugin provides the node type(s) of {listed}")
    prompt: ApiPrompt = {}
    for scope, node in real:
        cls = registry.nodes[node["type"]]
        try:
            inputs = _node_inputs(scope, node, cls)
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            if isinstance(exc, WorkflowFormatError):
                raise
            raise WorkflowFormatError(f"node {scope.full_id(node['id'])} ({node['type']}): cannot read its "
                                      f"inputs, links or widget values: {_reason(exc)}") from None
        prompt[scope.full_id(node["id"])] = {
            "class_type": cls.__name__,
            "inputs": inputs,
            "_meta": {"title": node.get("title") or cls.title()},
        }
    return prompt


# The top-level containers the conversion walks, with the JSON type each must have when present.
_CONTAINERS: tuple[tuple[tuple[str, ...], type], ...] = (
    (("links",), list), (("extra",), dict), (("extra", "groupNodes"), dict),
    (("definitions",), dict), (("definitions", "subgraphs"), list))


def _check_containers(document: dict[str, Any]) -> None:
    """Refuse, naming the key, a workflow whose links, extra or definitions have the wrong type."""
    for path, kind in _CONTAINERS:
        value: Any = document
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None and not isinstance(value, kind):
            wanted = "a list" if kind is list else "an object"
            raise WorkflowFormatError(f"a UI-format workflow's {'.'.join(path)!r} must be {wanted}, "
                                      f"got {_short(value)}")


def _reason(exc: Exception) -> str:
    # KeyError's text is only the key: say what it is.
    return f"missing key {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"


def _index_nodes(nodes: list[Any], where: str) -> dict[str, dict[str, Any]]:
    indexed: dict[str, dict[str, Any]] = {}
    for node in nodes:
        if not isinstance(node, dict) or "id" not in node or not isinstance(node.get("type"), str):
            raise WorkflowFormatError(f"{where}: every node needs an 'id' and a 'type', got {_short(node)}")
        indexed[str(node["id"])] = node
    return indexed


def _index_links(links: list[Any]) -> dict[str, _Link]:
    indexed: dict[str, _Link] = {}
    for raw in links:
        if isinstance(raw, list) and len(raw) >= 5:
            link_id, origin, origin_slot, target, target_slot = raw[:5]
            kind = raw[5] if len(raw) > 5 else "*"
        elif isinstance(raw, dict) and "origin_id" in raw:
            link_id, origin, origin_slot = raw.get("id"), raw["origin_id"], raw.get("origin_slot", 0)
            target, target_slot, kind = raw.get("target_id"), raw.get("target_slot", 0), raw.get("type", "*")
        elif raw is None:
            continue  # the editor leaves holes in its links array after deletions
        else:
            raise WorkflowFormatError(f"unreadable link {_short(raw)}: expected [id, origin, slot, "
                                      "target, slot, type] or {id, origin_id, origin_slot, …}")
        if not isinstance(origin_slot, int) or not isinstance(target_slot, int):
            raise WorkflowFormatError(f"link {link_id}: slots must be integers, got {_short(raw)}")
        indexed[str(link_id)] = _Link(origin, origin_slot, target, target_slot, str(kind))
    return indexed


def _real_nodes(scope: _Scope) -> Iterator[tuple[_Scope, dict[str, Any]]]:
    """Every node that becomes an API node, subgraph interiors included, in document order."""
    for node in scope.nodes.values():
        kind = node["type"]
        if node.get("mode") in (MUTED, BYPASSED) or kind in DROPPED_TYPES or kind in ("Reroute", "PrimitiveNode"):
            continue
        if kind in scope.definitions:
            yield from _real_nodes(scope.child(node))
        else:
            yield scope, node


def _node_inputs(scope: _Scope, node: dict[str, Any], cls: type[Node]) -> dict[str, Any]:
    inputs = widget_values(node, cls, scope.ctx)
    for slot, entry in enumerate(node.get("inputs") or []):
        if not isinstance(entry, dict):
            continue
        name = (entry.get("widget") or {}).get("name") or entry.get("name")
        link = scope.input_link(node, slot)
        if name is None or link is None or cls.input_spec(name) is None:
            continue
        resolved = _resolve(scope, link)
        if resolved is None:
            continue  # fed by a muted or missing node: the widget's own value (if any) stands
        inputs[name] = resolved.value if isinstance(resolved, _Constant) else resolved
    return inputs


def _resolve(scope: _Scope, link: _Link, depth: int = 0) -> _Resolved:
    """Follow a link through reroutes, bypassed nodes and subgraph boundaries to the real output
    (or PrimitiveNode constant) that feeds it; None when nothing does."""
    if depth > 1000:
        raise WorkflowFormatError(f"link from node {scope.full_id(link.origin)}: reroutes or bypassed "
                                  "nodes form a loop")
    if link.origin == SUBGRAPH_INPUT_ID or str(link.origin) == str(SUBGRAPH_INPUT_ID):
        return _resolve_subgraph_input(scope, link.origin_slot, depth)
    origin = scope.nodes.get(str(link.origin))
    if origin is None:
        return None  # a stale link: the editor ignores it too
    kind, mode = origin["type"], origin.get("mode")
    if mode == MUTED or kind in DROPPED_TYPES:
        return None
    if kind == "Reroute":
        upstream = scope.input_link(origin, 0)
        return _resolve(scope, upstream, depth + 1) if upstream else None
    if kind == "PrimitiveNode":
        values = origin.get("widgets_values")
        if isinstance(values, list) and values:
            return _Constant(values[0])
        return None
    if mode == BYPASSED:
        return _resolve_bypassed(scope, origin, link, depth)
    if kind in scope.definitions:
        return _resolve_subgraph_output(scope, origin, link.origin_slot, depth)
    return [scope.full_id(origin["id"]), link.origin_slot]


def _resolve_bypassed(scope: _Scope, node: dict[str, Any], link: _Link, depth: int) -> _Resolved:
    """As the editor does: the input at the same slot if its type matches, else the first input
    of the link's type."""
    inputs = node.get("inputs") or []
    order = [link.origin_slot] + [i for i in range(len(inputs)) if i != link.origin_slot]
    for slot in order:
        if 0 <= slot < len(inputs) and isinstance(inputs[slot], dict) and \
                _same_type(inputs[slot].get("type"), link.type):
            upstream = scope.input_link(node, slot)
            if upstream is not None:
                return _resolve(scope, upstream, depth + 1)
    return None


def _same_type(a: Any, b: Any) -> bool:
    return a == b or "*" in (a, b)


def _resolve_subgraph_output(scope: _Scope, instance: dict[str, Any], slot: int, depth: int) -> _Resolved:
    definition = scope.definitions[instance["type"]]
    outputs = definition.get("outputs") or []
    if not 0 <= slot < len(outputs):
        raise WorkflowFormatError(f"subgraph node {scope.full_id(instance['id'])} has no output {slot}")
    inner = scope.child(instance)
    for link_id in outputs[slot].get("linkIds") or []:
        link = inner.links.get(str(link_id))
        if link is not None:
            return _resolve(inner, link, depth + 1)
    return None


def _resolve_subgraph_input(scope: _Scope, slot: int, depth: int) -> _Resolved:
    if scope.parent is None or scope.instance is None:
        raise WorkflowFormatError("a top-level link starts at the subgraph input node (-10)")
    instance = scope.instance
    upstream = scope.parent.input_link(instance, slot)
    if upstream is not None:
        return _resolve(scope.parent, upstream, depth + 1)
    # Unlinked promoted widget: its value is the instance's own widget value.
    inputs = instance.get("inputs") or []
    values = instance.get("widgets_values")
    if 0 <= slot < len(inputs) and isinstance(inputs[slot], dict) and inputs[slot].get("widget") \
            and isinstance(values, list):
        position = sum(1 for entry in inputs[:slot] if isinstance(entry, dict) and entry.get("widget"))
        if position < len(values):
            return _Constant(values[position])
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:120] + "…"
