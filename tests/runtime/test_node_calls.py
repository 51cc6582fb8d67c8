"""What a node's run returns and reports: a wrong output count and bad progress values name the
node and what it got."""

from __future__ import annotations

from typing import Any

import pytest

from graph_runtime import Context, FolderPaths, InterruptFlag, Node, Output, Services
from graph_runtime.node_calls import collect_returns


class TwoOutputs(Node):
    outputs = [Output("INT"), Output("INT")]

    def run(self, ctx: Context) -> tuple[int, int]:
        return (1, 2)


@pytest.mark.parametrize(("returned", "got"), [((1,), "got a tuple of 1 value(s)"), ([1, 2], "got list")])
def test_a_wrong_return_says_what_it_got(returned: Any, got: str) -> None:
    with pytest.raises(TypeError) as info:
        collect_returns([returned], TwoOutputs)
    assert str(info.value) == f"TwoOutputs.run must return a tuple of 2 value(s) or a Result, {got}"


def _context(tmp_path: Any, seen: list[tuple[Any, ...]]) -> Context:
    return Context(prompt_id="p", node_id="7", class_type="Sampler", folders=FolderPaths(base=tmp_path),
                   services=Services(), interrupt=InterruptFlag(),
                   report_progress=lambda *args: seen.append(args), extra_data={})


@pytest.mark.parametrize(("value", "maximum", "bad"), [("a", None, "value='a'"), (1, None, "max=None"),
                                                       (True, 3, "value=True")])
def test_progress_with_a_non_number_raises_naming_the_node(tmp_path: Any, value: Any, maximum: Any, bad: str) -> None:
    seen: list[tuple[Any, ...]] = []
    with pytest.raises(TypeError) as info:
        _context(tmp_path, seen).progress(value, maximum)
    assert str(info.value) == f"node 7 (Sampler): ctx.progress(value, max) takes numbers, got {bad}"
    assert seen == []


def test_progress_with_numbers_is_reported(tmp_path: Any) -> None:
    seen: list[tuple[Any, ...]] = []
    _context(tmp_path, seen).progress(2, 4.0)
    assert seen == [("7", 2, 4.0, None, None)]
