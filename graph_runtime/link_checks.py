"""Checks of one linked input at validation: the link's shape, its source node and output index,
and that the produced link type is one the input accepts (ComfyUI's error types and messages)."""

from __future__ import annotations

from typing import Any

from graph_runtime.formats import ApiPrompt, is_link
from graph_runtime.node import InputSpec, Node
from graph_runtime.widget_values import short_value


def check_link(node_id: str, spec: InputSpec, value: list[Any], prompt: ApiPrompt,
                known: dict[str, type[Node]], fail: Any) -> None:
    """Report through ``fail(kind, spec, message, details, **extra)`` what is wrong with the link
    ``value`` feeding ``spec`` of node ``node_id``; nothing when it is sound."""
    if not is_link(value):
        fail("bad_linked_input", spec, "Bad linked input, must be a length-2 list of [string, int]",
             str(value), received_value=short_value(value))
        return
    source_id, index = str(value[0]), value[1]
    if source_id == node_id:
        fail("bad_linked_input", spec, "Node links to itself", f"{spec.name} ← node {source_id}")
        return
    if source_id not in prompt:
        fail("bad_linked_input", spec, f"Input links to node {source_id}, which is not in the workflow",
             f"{spec.name} ← [{source_id}, {index}]")
        return
    source = known.get(source_id)
    if source is None:
        return  # its own error (unknown class or malformed node) is already reported
    if not 0 <= index < len(source.outputs):
        fail("bad_linked_input", spec,
             f"Output index {index} out of range: {source.__name__} has {len(source.outputs)} output(s)",
             f"{spec.name} ← [{source_id}, {index}]")
        return
    produced = source.outputs[index].type
    if not types_compatible(produced, spec):
        fail("return_type_mismatch", spec, "Return type mismatch between linked nodes",
             f"{spec.name}, received_type({produced}) mismatch input_type({spec.type})",
             received_type=produced, linked_node=[source_id, index])


def types_compatible(produced: str, spec: InputSpec) -> bool:
    """Whether an output of link type ``produced`` may feed ``spec`` ("*" matches anything; a
    comma-separated type matches any of its parts; a COMBO takes a STRING)."""
    accepted = spec.type
    if produced == "*" or accepted == "*":
        return True
    if accepted == "COMBO":
        return produced in ("COMBO", "STRING")
    produced_set = {t.strip() for t in produced.split(",")}
    accepted_set = {t.strip() for t in accepted.split(",")}
    return bool(produced_set & accepted_set)
