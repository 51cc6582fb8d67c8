"""Primitive value nodes (ComfyUI's comfy_extras/nodes_primitive.py): one widget named ``value``,
passed through as the node's output so several inputs can share it."""

from __future__ import annotations

import sys

from graph_runtime import Boolean, Context, Float, Int, Node, Output, String

CATEGORY = "utils/primitive"


class PrimitiveInt(Node):
    display_name = "Int"
    category = CATEGORY
    description = "An integer value, shared by every input linked to it."
    inputs = [Int("value", 0, min=-sys.maxsize, max=sys.maxsize, control_after_generate=True)]
    outputs = [Output("INT")]

    def run(self, ctx: Context, *, value: int) -> tuple[int]:
        return (value,)


class PrimitiveFloat(Node):
    display_name = "Float"
    category = CATEGORY
    description = "A floating-point value, shared by every input linked to it."
    inputs = [Float("value", 0.0, min=-sys.maxsize, max=sys.maxsize)]
    outputs = [Output("FLOAT")]

    def run(self, ctx: Context, *, value: float) -> tuple[float]:
        return (value,)


class PrimitiveString(Node):
    display_name = "String"
    category = CATEGORY
    description = "A one-line string, shared by every input linked to it."
    inputs = [String("value", "")]
    outputs = [Output("STRING")]

    def run(self, ctx: Context, *, value: str) -> tuple[str]:
        return (value,)


class PrimitiveStringMultiline(Node):
    display_name = "String (Multiline)"
    category = CATEGORY
    description = "A multi-line string (a prompt, say), shared by every input linked to it."
    inputs = [String("value", "", multiline=True)]
    outputs = [Output("STRING")]

    def run(self, ctx: Context, *, value: str) -> tuple[str]:
        return (value,)


class PrimitiveBoolean(Node):
    display_name = "Boolean"
    category = CATEGORY
    description = "A true/false value, shared by every input linked to it."
    inputs = [Boolean("value", False)]
    outputs = [Output("BOOLEAN")]

    def run(self, ctx: Context, *, value: bool) -> tuple[bool]:
        return (value,)


NODES: list[type[Node]] = [PrimitiveInt, PrimitiveFloat, PrimitiveString, PrimitiveStringMultiline,
                           PrimitiveBoolean]
