"""Calling a node's ``run`` with ComfyUI's list semantics, collecting what it returns, and
describing values for error reports."""

from __future__ import annotations

from typing import Any

from graph_runtime.context import Context
from graph_runtime.node import Node, Result

Outputs = tuple[list[Any], ...]


class NodeFailed(Exception):
    """A node's hook or ``run`` raised; carries the node, its class, the cause and its inputs."""

    def __init__(self, node_id: str, class_type: str, cause: BaseException, inputs: dict[str, Any]) -> None:
        super().__init__(f"node {node_id} ({class_type}) failed: {type(cause).__name__}: {cause}")
        self.node_id = node_id
        self.class_type = class_type
        self.cause = cause
        self.inputs = inputs


def call_mapped(node: Node, ctx: Context, inputs: dict[str, list[Any]],
                 cls: type[Node]) -> tuple[Outputs, dict[str, Any] | None]:
    """Run a node with ComfyUI's list semantics: once with whole lists (input_is_list), or once
    per index up to the longest list (shorter lists repeat their last item); outputs declared
    is_list are flattened."""
    if cls.input_is_list:
        return collect_returns([node.run(ctx, **inputs)], cls)
    lengths = [len(values) for values in inputs.values()]
    count = max(lengths, default=1)
    if lengths and min(lengths) == 0:
        count = 0
    if count == 1:
        return collect_returns([node.run(ctx, **{k: v[0] for k, v in inputs.items()})], cls)
    returns = []
    for index in range(count):
        ctx.check_interrupted()
        returns.append(node.run(ctx, **{k: v[min(index, len(v) - 1)] for k, v in inputs.items()}))
    return collect_returns(returns, cls)


def collect_returns(returns: list[Any], cls: type[Node]) -> tuple[Outputs, dict[str, Any] | None]:
    outputs: list[list[Any]] = [[] for _ in cls.outputs]
    ui: dict[str, Any] | None = None
    for returned in returns:
        if isinstance(returned, Result):
            values, shown = tuple(returned.outputs), returned.ui
        else:
            values, shown = returned, None
        if not isinstance(values, tuple) or len(values) != len(cls.outputs):
            got = (f"a tuple of {len(values)} value(s)" if isinstance(values, tuple)
                   else type(values).__name__)
            raise TypeError(f"{cls.__name__}.run must return a tuple of {len(cls.outputs)} value(s) "
                            f"or a Result, got {got}")
        for slot, (spec, value) in enumerate(zip(cls.outputs, values)):
            if spec.is_list:
                outputs[slot].extend(value)
            else:
                outputs[slot].append(value)
        if shown:
            ui = ui or {}
            for key, items in shown.items():
                existing = ui.setdefault(key, [])
                existing.extend(items if isinstance(items, list) else [items])
    return tuple(outputs), ui


def qualname(exc: BaseException) -> str:
    kind = type(exc)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"


def describe_value(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"{type(value).__name__}{list(shape)} {getattr(value, 'dtype', '')}".strip()
    if isinstance(value, list):
        return [describe_value(v) for v in value[:8]]
    return type(value).__name__

