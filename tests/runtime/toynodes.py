"""Small node classes for the runtime tests: numbers and strings instead of tensors, plus nodes that
record their calls, fail, report progress, take lazy inputs and work on lists."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from graph_runtime import (
    Boolean, Combo, Context, Float, Hidden, Int, Link, ModelFile, Node, Output, Result, String,
)
from graph_runtime.node import NodeDefinitionError  # noqa: F401 - re-exported for the tests

# Node ids in the order they ran, across runs; tests clear it.
CALLS: list[str] = []


def record(ctx: Context) -> None:
    CALLS.append(ctx.node_id)


class Number(Node):
    category = "test"
    inputs = [Int("value", 0, min=-1000, max=1000)]
    outputs = [Output("INT", "value")]

    def run(self, ctx: Context, *, value: int) -> tuple[int]:
        record(ctx)
        return (value,)


class Add(Node):
    category = "test"
    inputs = [Link("a", "INT"), Link("b", "INT"), Int("offset", 0, optional=True)]
    outputs = [Output("INT")]

    def run(self, ctx: Context, *, a: int, b: int, offset: int | None = None) -> tuple[int]:
        record(ctx)
        return (a + b + (offset or 0),)


class Scale(Node):
    category = "test"
    inputs = [Link("x", "INT"), Float("factor", 1.0, min=-10.0, max=10.0)]
    outputs = [Output("FLOAT")]

    def run(self, ctx: Context, *, x: int, factor: float) -> tuple[float]:
        record(ctx)
        return (x * factor,)


class Text(Node):
    category = "test"
    inputs = [String("text", "hello", multiline=True)]
    outputs = [Output("STRING")]

    def run(self, ctx: Context, *, text: str) -> tuple[str]:
        record(ctx)
        return (text,)


class Pick(Node):
    category = "test"
    inputs = [Combo("mode", ["first", "second", "third"], default="first"), Boolean("flag", False)]
    outputs = [Output("STRING")]

    def run(self, ctx: Context, *, mode: str, flag: bool) -> tuple[str]:
        record(ctx)
        return (f"{mode}:{flag}",)


class Collect(Node):
    """Output node: shows whatever it receives."""

    category = "test"
    output_node = True
    inputs = [Link("value", "*")]
    outputs = []

    def run(self, ctx: Context, *, value: Any) -> Result:
        record(ctx)
        return Result(ui={"values": [value]})


class Switch(Node):
    """Evaluates only the branch it selects."""

    category = "test"
    inputs = [Boolean("select", True), Link("on_true", "*", lazy=True), Link("on_false", "*", lazy=True)]
    outputs = [Output("*")]

    def check_lazy(self, ctx: Context, **available: Any) -> list[str]:
        return ["on_true" if available["select"] else "on_false"]

    def run(self, ctx: Context, *, select: bool, on_true: Any, on_false: Any) -> tuple[Any]:
        record(ctx)
        return (on_true if select else on_false,)


class Fail(Node):
    category = "test"
    inputs = [Link("x", "INT"), String("message", "boom")]
    outputs = [Output("INT")]

    def run(self, ctx: Context, *, x: int, message: str) -> tuple[int]:
        record(ctx)
        raise RuntimeError(message)


class Steps(Node):
    """Reports progress ``steps`` times; ``interrupt_at`` asks the run to stop from inside."""

    category = "test"
    inputs = [Link("x", "INT"), Int("steps", 3, min=1, max=100), Int("interrupt_at", -1, min=-1, max=100, optional=True)]
    outputs = [Output("INT")]

    def run(self, ctx: Context, *, x: int, steps: int, interrupt_at: int | None = None) -> tuple[int]:
        record(ctx)
        for step in range(1, steps + 1):
            if step == interrupt_at:
                ctx.interrupt.set()
            ctx.progress(step, steps)
        return (x,)


class Range(Node):
    category = "test"
    inputs = [Int("count", 3, min=0, max=50)]
    outputs = [Output("INT", is_list=True)]

    def run(self, ctx: Context, *, count: int) -> tuple[list[int]]:
        record(ctx)
        return (list(range(count)),)


class Double(Node):
    category = "test"
    inputs = [Link("x", "INT")]
    outputs = [Output("INT")]

    def run(self, ctx: Context, *, x: int) -> tuple[int]:
        record(ctx)
        return (x * 2,)


class Sum(Node):
    category = "test"
    input_is_list = True
    inputs = [Link("values", "INT")]
    outputs = [Output("INT")]

    def run(self, ctx: Context, *, values: list[int]) -> tuple[int]:
        record(ctx)
        return (sum(values),)


class FileStamp(Node):
    """Re-runs when the file changes (fingerprint = mtime and size)."""

    category = "test"
    inputs = [String("path", "")]
    outputs = [Output("STRING")]

    @classmethod
    def fingerprint(cls, ctx: HookContext, **widgets: Any) -> Any:
        stat = os.stat(widgets["path"])
        return (stat.st_mtime_ns, stat.st_size)

    def run(self, ctx: Context, *, path: str) -> tuple[str]:
        record(ctx)
        return (Path(path).read_text(),)


class Even(Node):
    category = "test"
    inputs = [Int("value", 0)]
    outputs = [Output("INT")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        return None if widgets["value"] % 2 == 0 else f"value must be even, got {widgets['value']}"

    def run(self, ctx: Context, *, value: int) -> tuple[int]:
        return (value,)


class BrokenCheck(Node):
    category = "test"
    inputs = [Int("value", 0)]
    outputs = [Output("INT")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        raise ZeroDivisionError("validator bug")

    def run(self, ctx: Context, *, value: int) -> tuple[int]:
        return (value,)


class Checkpoint(Node):
    category = "test"
    inputs = [ModelFile("ckpt_name", "checkpoints")]
    outputs = [Output("STRING")]

    def run(self, ctx: Context, *, ckpt_name: str) -> tuple[str]:
        return (ckpt_name,)


class WhoAmI(Node):
    category = "test"
    output_node = True
    inputs = [Hidden("node", "UNIQUE_ID"), Hidden("pnginfo", "EXTRA_PNGINFO")]
    outputs = []

    def run(self, ctx: Context, *, node: str, pnginfo: Any) -> Result:
        return Result(ui={"values": [node, pnginfo]})


NODES: list[type[Node]] = [
    Number, Add, Scale, Text, Pick, Collect, Switch, Fail, Steps, Range, Double, Sum, FileStamp,
    Even, BrokenCheck, Checkpoint, WhoAmI,
]
