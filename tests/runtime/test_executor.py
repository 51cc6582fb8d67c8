"""Execution: only what outputs need, cache reuse, lazy inputs, lists, events, interrupts, failures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from graph_runtime import InterruptFlag, OutputCache, Runtime, WorkflowInvalid
from graph_runtime.events import (
    Event, Executed, Executing, ExecutionCached, ExecutionError, ExecutionInterrupted, ExecutionStart,
    ExecutionSuccess, Progress,
)


def chain() -> dict[str, Any]:
    """1 → 3 ← 2, 3 → 4 (scale) → 5 (collect); 6 is unused."""
    return {"1": {"class_type": "Number", "inputs": {"value": 2}},
            "2": {"class_type": "Number", "inputs": {"value": 3}},
            "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
            "4": {"class_type": "Scale", "inputs": {"x": ["3", 0], "factor": 10}},
            "5": {"class_type": "Collect", "inputs": {"value": ["4", 0]}},
            "6": {"class_type": "Number", "inputs": {"value": 99}}}


def test_runs_only_what_outputs_need(runtime: Runtime, calls: list[str]) -> None:
    result = runtime.execute(chain())
    assert result.status == "success"
    assert sorted(calls) == ["1", "2", "3", "4", "5"]
    assert result.outputs == {"5": {"values": [50.0]}}


def test_rerun_after_one_change_runs_only_downstream(runtime: Runtime, calls: list[str]) -> None:
    runtime.execute(chain())
    calls.clear()
    prompt = chain()
    prompt["2"]["inputs"]["value"] = 4
    result = runtime.execute(prompt)
    assert calls == ["2", "3", "4", "5"]
    assert "1" in result.cached and result.outputs["5"] == {"values": [60.0]}
    calls.clear()
    again = runtime.execute(prompt)
    assert calls == [] and again.outputs["5"] == {"values": [60.0]} and again.executed == []


def test_cache_policy_none_recomputes(registry: Any, folders: Any, calls: list[str]) -> None:
    runtime = Runtime(registry, cache=OutputCache(policy="none"), folders=folders)
    runtime.execute(chain())
    calls.clear()
    runtime.execute(chain())
    assert sorted(calls) == ["1", "2", "3", "4", "5"]


def test_lazy_inputs_evaluate_only_the_selected_branch(runtime: Runtime, calls: list[str]) -> None:
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 1}},
              "2": {"class_type": "Number", "inputs": {"value": 2}},
              "3": {"class_type": "Switch", "inputs": {"select": False, "on_true": ["1", 0], "on_false": ["2", 0]}},
              "4": {"class_type": "Collect", "inputs": {"value": ["3", 0]}}}
    result = runtime.execute(prompt)
    assert "1" not in calls and result.outputs["4"] == {"values": [2]}


def test_list_semantics(runtime: Runtime, calls: list[str]) -> None:
    prompt = {"1": {"class_type": "Range", "inputs": {"count": 4}},
              "2": {"class_type": "Double", "inputs": {"x": ["1", 0]}},  # mapped once per item
              "3": {"class_type": "Sum", "inputs": {"values": ["2", 0]}},  # takes the whole list
              "4": {"class_type": "Collect", "inputs": {"value": ["3", 0]}},
              "5": {"class_type": "Collect", "inputs": {"value": ["2", 0]}}}
    result = runtime.execute(prompt, keep=["2"])
    assert result.values["2"] == ([0, 2, 4, 6],)
    assert calls.count("2") == 4 and calls.count("3") == 1
    assert result.outputs["4"] == {"values": [12]}
    assert result.outputs["5"] == {"values": [0, 2, 4, 6]}  # an output node mapped over the list


def test_events_in_order_with_whole_workflow_progress(runtime: Runtime) -> None:
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 1}},
              "2": {"class_type": "Steps", "inputs": {"x": ["1", 0], "steps": 4}},
              "3": {"class_type": "Collect", "inputs": {"value": ["2", 0]}}}
    events: list[Event] = []
    runtime.execute(prompt, prompt_id="p1", listeners=[events.append])
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["ExecutionStart", "ExecutionCached", "Executing", "Executing", "Progress", "Progress",
                     "Progress", "Progress", "Executing", "Executed", "ExecutionSuccess"]
    assert all(e.prompt_id == "p1" for e in events)
    start = events[0]
    assert isinstance(start, ExecutionStart) and start.nodes_total == 3
    executing = [e for e in events if isinstance(e, Executing)]
    assert [e.node_id for e in executing] == ["1", "2", "3"]
    progress = [e for e in events if isinstance(e, Progress)]
    assert [(p.value, p.max) for p in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    fractions = [e.workflow.fraction for e in events if isinstance(e, (Executing, Progress))]
    assert fractions == sorted(fractions) and fractions[0] == 0.0
    assert progress[-1].workflow.fraction == pytest.approx(2 / 3)  # node 1 done + node 2 complete
    # A second run reports everything cached.
    events.clear()
    runtime.execute(prompt, listeners=[events.append])
    cached = next(e for e in events if isinstance(e, ExecutionCached))
    assert cached.nodes == ["1", "2", "3"]  # every cached node, as ComfyUI reports them
    assert any(isinstance(e, Executed) and e.cached for e in events)


def test_interrupt_at_node_boundary_is_per_run(runtime: Runtime, calls: list[str]) -> None:
    flag = InterruptFlag()

    def stop_after_first(event: Event) -> None:
        # set as node 3 starts: as in ComfyUI, a node that has started finds the interrupt before
        # its function runs (a flag set while node 2 runs is seen there too)
        if isinstance(event, Executing) and event.node_id == "3":
            flag.set()

    result = runtime.execute(chain(), listeners=[stop_after_first], interrupt=flag)
    assert result.status == "interrupted" and calls == ["1", "2"]
    # Another run with its own flag is unaffected, and reuses what the interrupted run cached.
    calls.clear()
    events: list[Event] = []
    assert runtime.execute(chain(), listeners=[events.append]).status == "success"
    assert sorted(calls) == ["3", "4", "5"]


def test_interrupt_from_a_progress_report_inside_a_node(runtime: Runtime) -> None:
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 1}},
              "2": {"class_type": "Steps", "inputs": {"x": ["1", 0], "steps": 10, "interrupt_at": 3}},
              "3": {"class_type": "Collect", "inputs": {"value": ["2", 0]}}}
    events: list[Event] = []
    result = runtime.execute(prompt, listeners=[events.append])
    assert result.status == "interrupted"
    progress = [e.value for e in events if isinstance(e, Progress)]
    assert progress == [1, 2]  # stopped at the third report
    stopped = events[-1]
    assert isinstance(stopped, ExecutionInterrupted) and stopped.node_id == "2" and stopped.node_type == "Steps"
    assert stopped.executed == ["1"]


def test_failing_node_ends_the_run_naming_it_and_keeps_the_runtime_usable(runtime: Runtime, calls: list[str]) -> None:
    prompt = chain()
    prompt["4"] = {"class_type": "Fail", "inputs": {"x": ["3", 0], "message": "out of paint"}}
    events: list[Event] = []
    result = runtime.execute(prompt, listeners=[events.append])
    assert result.status == "error"
    error = result.error
    assert isinstance(error, ExecutionError) and events[-1] == error
    assert (error.node_id, error.node_type) == ("4", "Fail")
    assert error.exception_type == "RuntimeError" and error.exception_message == "out of paint"
    assert error.current_inputs == {"x": [5], "message": ["out of paint"]}
    assert any("out of paint" in line for line in error.traceback)
    assert not any(isinstance(e, ExecutionSuccess) for e in events)
    # Nodes before the failure stay cached and correct; the fixed workflow reuses them.
    calls.clear()
    fixed = runtime.execute(chain())
    assert fixed.status == "success" and fixed.outputs["5"] == {"values": [50.0]}
    assert sorted(calls) == ["4", "5"]


def test_invalid_workflow_raises_before_anything_runs(runtime: Runtime, calls: list[str]) -> None:
    prompt = chain()
    prompt["2"]["inputs"]["value"] = "lots"
    with pytest.raises(WorkflowInvalid) as info:
        runtime.execute(prompt)
    assert calls == []
    assert info.value.result.node_errors[0].node_id == "2"


def test_fingerprint_change_reruns(runtime: Runtime, calls: list[str], tmp_path: Path) -> None:
    source = tmp_path / "note.txt"
    source.write_text("one")
    prompt = {"1": {"class_type": "FileStamp", "inputs": {"path": str(source)}},
              "2": {"class_type": "Collect", "inputs": {"value": ["1", 0]}}}
    assert runtime.execute(prompt).outputs["2"] == {"values": ["one"]}
    assert runtime.execute(prompt).executed == []
    source.write_text("three")
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    assert runtime.execute(prompt).outputs["2"] == {"values": ["three"]}


def test_failing_fingerprint_is_that_nodes_failure(runtime: Runtime, tmp_path: Path) -> None:
    prompt = {"1": {"class_type": "FileStamp", "inputs": {"path": str(tmp_path / "missing.txt")}},
              "2": {"class_type": "Collect", "inputs": {"value": ["1", 0]}}}
    result = runtime.execute(prompt)
    assert result.status == "error" and result.error.node_id == "1"
    assert result.error.exception_type == "FileNotFoundError"


def test_hidden_inputs(runtime: Runtime) -> None:
    prompt = {"7": {"class_type": "WhoAmI", "inputs": {}}}
    result = runtime.execute(prompt, extra_data={"extra_pnginfo": {"workflow": {"nodes": []}}})
    assert result.outputs["7"] == {"values": ["7", {"workflow": {"nodes": []}}]}


def test_deep_chain_does_not_hit_the_recursion_limit(runtime: Runtime) -> None:
    prompt: dict[str, Any] = {"0": {"class_type": "Number", "inputs": {"value": 1}}}
    for i in range(1, 3000):
        prompt[str(i)] = {"class_type": "Double" if i < 10 else "Switch",
                          "inputs": {"x": [str(i - 1), 0]} if i < 10 else
                          {"select": True, "on_true": [str(i - 1), 0], "on_false": [str(i - 1), 0]}}
    prompt["end"] = {"class_type": "Collect", "inputs": {"value": ["2999", 0]}}
    assert runtime.execute(prompt).outputs["end"] == {"values": [512]}
