"""Node declarations are checked when the class is defined."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from graph_runtime import Combo, Context, FolderPaths, Hidden, HookContext, Int, Link, Node, Output
from graph_runtime.node import NodeDefinitionError

NO_FILES = HookContext(FolderPaths(base=Path("/nonexistent-nodeloom-base")))


def define(body: dict[str, Any], name: str = "Broken") -> type[Node]:
    return type(name, (Node,), body)


def run_taking(*names: str) -> Any:
    params = ", ".join(names)
    scope: dict[str, Any] = {}
    exec(f"def run(self, ctx, *, {params}): return (1,)" if names else "def run(self, ctx): return (1,)", scope)
    return scope["run"]


@pytest.mark.parametrize("body, message", [
    ({"inputs": [Int("a"), Int("a")], "outputs": [Output("INT")], "run": run_taking("a")},
     "declared twice: ['a']"),
    ({"inputs": [Int("ctx")], "outputs": [Output("INT")], "run": run_taking("a")}, "'ctx' is reserved"),
    ({"inputs": ["seed"], "outputs": [Output("INT")], "run": run_taking("seed")}, "must be InputSpec"),
    ({"inputs": [Int("a")], "outputs": ["INT"], "run": run_taking("a")}, "must be Output"),
    ({"inputs": [Int("a"), Int("b")], "outputs": [Output("INT")], "run": run_taking("a")},
     "does not accept declared inputs ['b']"),
    ({"inputs": [Int("a")], "outputs": [Output("INT")], "run": run_taking("a", "extra")},
     "requires undeclared inputs ['extra']"),
    ({"inputs": [Int("a")], "outputs": [], "run": run_taking("a")}, "declares no outputs"),
])
def test_bad_declarations_raise_naming_the_class(body: dict[str, Any], message: str) -> None:
    with pytest.raises(NodeDefinitionError) as info:
        define(body, "MyBrokenNode")
    assert "MyBrokenNode" in str(info.value)
    assert message in str(info.value)


def test_combo_without_choices_is_rejected() -> None:
    from graph_runtime.node import InputSpec

    with pytest.raises(NodeDefinitionError, match="COMBO input 'mode' declares no choices"):
        define({"inputs": [InputSpec(name="mode", type="COMBO")], "outputs": [Output("STRING")],
                "run": run_taking("mode")})


def test_hidden_kind_is_checked() -> None:
    with pytest.raises(AssertionError, match="hidden input kind"):
        Hidden("x", "SECRET")


def test_valid_node_exposes_its_declaration() -> None:
    class Blend(Node):
        category = "image"
        inputs = [Link("a", "IMAGE"), Int("amount", 5, min=0, max=10, control_after_generate=True),
                  Combo("mode", lambda ctx: ["add", "mul"], default="add"), Int("extra", 0, optional=True, lazy=True)]
        outputs = [Output("IMAGE", "blended")]

        def run(self, ctx: Context, **inputs: Any) -> tuple[Any]:
            return (inputs,)

    assert Blend.input_spec("amount").schema(NO_FILES) == ["INT", {"default": 5, "min": 0, "max": 10,
                                                          "control_after_generate": True}]
    assert Blend.input_spec("mode").schema(NO_FILES) == [["add", "mul"], {"default": "add"}]
    assert Blend.lazy_input_names() == {"extra"}
    assert Blend.title() == "Blend" and Blend.outputs[0].display_name == "blended"


def test_output_node_may_have_no_outputs_and_abstract_bases_are_not_checked() -> None:
    class Base(Node):
        inputs = [Int("a")]

    class Sink(Base):
        output_node = True

        def run(self, ctx: Context, *, a: int) -> tuple[()]:
            return ()

    assert Sink.output_node


@pytest.mark.parametrize(("attribute", "meant"), [
    ("long_runing", "long_running"), ("output_nod", "output_node"), ("categroy", "category"),
])
def test_a_misspelt_class_attribute_is_refused_naming_the_nearest(attribute: str, meant: str) -> None:
    body = {attribute: True, "outputs": [Output("INT")], "run": lambda self, ctx: (1,)}
    with pytest.raises(NodeDefinitionError) as info:
        type("Typo", (Node,), body)
    assert f"{attribute!r}" in str(info.value) and f"did you mean {meant!r}" in str(info.value)
    assert "Typo" in str(info.value)


def test_extra_attributes_and_methods_not_close_to_a_known_one_are_kept() -> None:
    class Base(Node):
        family = "sd15"  # a subclass's own attribute becomes known to its subclasses

    with pytest.raises(NodeDefinitionError, match="'familly'.*did you mean 'family'"):
        type("Extra", (Base,), {"familly": "sdxl", "outputs": [Output("INT")], "run": lambda self, ctx: (1,)})

    class Fine(Node):
        scale_factor = 8
        DEFAULTS = {"x": 1}
        outputs = [Output("INT")]

        def categorise(self) -> str:  # a method, however close, is not checked
            return "x"

        def run(self, ctx: Context) -> tuple[int]:
            return (1,)

    assert Fine.scale_factor == 8
