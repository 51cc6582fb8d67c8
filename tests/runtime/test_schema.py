"""/object_info schemas: a COMBO whose choices callable raises keeps its node listed."""

from __future__ import annotations

import logging

import pytest

from graph_runtime import Combo, Context, FolderPaths, HookContext, Node, NodeRegistry, Output, Runtime
from graph_runtime.schema import object_info


def _broken(ctx: HookContext) -> list[str]:
    return [str(1 / 0)]


class BadChoices(Node):
    output_node = True
    inputs = [Combo("pick", _broken), Combo("mode", ["a", "b"])]
    outputs = [Output("STRING")]

    def run(self, ctx: Context, *, pick: str, mode: str) -> tuple[str]:
        return (pick,)


class Fine(Node):
    outputs = [Output("STRING")]

    def run(self, ctx: Context) -> tuple[str]:
        return ("x",)


@pytest.fixture
def runtime(folders: FolderPaths) -> Runtime:
    registry = NodeRegistry()
    registry.add_node(BadChoices, plugin="bad")
    registry.add_node(Fine, plugin="fine")
    return Runtime(registry, folders=folders)


def test_a_raising_choices_callable_lists_no_choices_and_warns_naming_node_and_input(
        runtime: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        info = object_info(runtime.registry, runtime.hook_context)
    assert sorted(info) == ["BadChoices", "Fine"]
    assert info["BadChoices"]["input"]["required"]["pick"] == [[], {}]
    assert info["BadChoices"]["input"]["required"]["mode"] == [["a", "b"], {}]
    assert [r.getMessage() for r in caplog.records] == [
        "node BadChoices, input pick: choices could not be listed: ZeroDivisionError: division by zero"]


def test_choices_error_names_the_reason_only_for_a_raising_callable(hook_context: HookContext) -> None:
    pick, mode = BadChoices.inputs
    assert pick.choices_error(hook_context) == "choices could not be listed: ZeroDivisionError: division by zero"
    assert mode.choices_error(hook_context) is None
    assert pick.listed_choices(hook_context) == ([], pick.choices_error(hook_context))


def test_validation_reports_choices_that_could_not_be_listed(runtime: Runtime) -> None:
    result = runtime.validate({"1": {"class_type": "BadChoices", "inputs": {"pick": "x", "mode": "a"}}})
    assert not result.ok
    (error,) = result.node_errors
    assert (error.node_id, error.class_type) == ("1", "BadChoices")
    assert "pick" in error.describe()
    assert "choices could not be listed: ZeroDivisionError: division by zero" in error.describe()
