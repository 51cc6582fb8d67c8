"""Length limits on what a prompt names and carries, checked before any other validation.

A 10 MB ``class_type`` or string input costs nothing to refuse here, and seconds to minutes
anywhere later (error messages quoting it, path handling, a worker saving it); one length check
per string keeps validation in milliseconds whatever the prompt holds. Errors quote only the start
of an oversized value.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# Longest piece of an oversized value quoted in an error.
QUOTED_CHARS = 64
# Deepest container nesting a submission may carry. Pydantic's JSON parser, which reads every
# HTTP body and websocket frame, refuses past about this depth; a value nested deeper (from
# json.loads or built in code) breaks json.loads, pickling and history encoding further on.
MAX_JSON_DEPTH = 200


@dataclass(frozen=True)
class InputLimits:
    """``identifier_chars``: node ids, class_type, input names, link sources; ``string_chars``:
    string input values and node titles; ``max_nodes``: nodes of one prompt."""

    identifier_chars: int = 256
    string_chars: int = 256 << 10
    # Nodes per prompt: execution events cost time per node (progress reports list them all).
    max_nodes: int = 10_000


@dataclass(frozen=True)
class Oversized:
    """One value past its limit. ``node_id`` and ``class_type`` are quoted short; ``input_name``
    is None for the node's own id, class_type or title."""

    node_id: str
    class_type: str
    input_name: str | None
    what: str
    length: int
    limit: int

    @property
    def message(self) -> str:
        return f"{self.what} is too long: {self.length} characters, at most {self.limit}"


def quote(text: str) -> str:
    """``text``, or its start and length when it is long."""
    return text if len(text) <= QUOTED_CHARS else f"{text[:QUOTED_CHARS]}… ({len(text)} characters)"


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` nests dicts and lists more than ``limit`` levels; counted with a stack,
    not recursion, so any depth is measured safely."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def oversized(prompt: dict[str, Any], limits: InputLimits) -> Iterator[Oversized]:
    """Every identifier and string of an API-format prompt longer than ``limits`` allow."""
    ident, string = limits.identifier_chars, limits.string_chars
    for node_id, node in prompt.items():
        short_id = quote(str(node_id))
        if len(node_id) > ident:
            yield Oversized(short_id, "?", None, "node id", len(node_id), ident)
            continue
        if not isinstance(node, dict):
            continue
        class_type = node.get("class_type")
        name = quote(class_type) if isinstance(class_type, str) else "?"
        if isinstance(class_type, str) and len(class_type) > ident:
            yield Oversized(short_id, name, None, "class_type", len(class_type), ident)
        meta = node.get("_meta")
        title = meta.get("title") if isinstance(meta, dict) else None
        if isinstance(title, str) and len(title) > string:
            yield Oversized(short_id, name, None, "_meta.title", len(title), string)
        inputs = node.get("inputs")
        for input_name, value in inputs.items() if isinstance(inputs, dict) else ():
            if len(input_name) > ident:
                yield Oversized(short_id, name, quote(input_name), "input name", len(input_name), ident)
            elif isinstance(value, str) and len(value) > string:
                yield Oversized(short_id, name, input_name, "string value", len(value), string)
            elif isinstance(value, list) and value and isinstance(value[0], str) and len(value[0]) > ident:
                yield Oversized(short_id, name, input_name, "linked node id", len(value[0]), ident)
