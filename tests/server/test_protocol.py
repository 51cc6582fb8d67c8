"""graph_runtime events as ComfyUI's websocket messages, the binary frames, native envelopes."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from graph_runtime.events import (
    Executed, Executing, ExecutionCached, ExecutionError, ExecutionInterrupted, ExecutionStart, ExecutionSuccess,
    Preview, Progress, WorkflowProgress,
)
from server.wire.protocol import (
    PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA, TEXT, PromptTranslator, binary_request, parse_binary_request,
    preview_frame, text_frame,
)

FLOW = WorkflowProgress(nodes_done=0, nodes_total=2, fraction=0.0)


def _types(out: object) -> list[str]:
    return [m["type"] for m in out.messages]  # type: ignore[attr-defined]


def test_a_run_translates_to_comfyui_messages_with_progress_state() -> None:
    t = PromptTranslator("p")
    assert _types(t.translate(ExecutionStart(prompt_id="p", timestamp=5))) == ["execution_start"]
    cached = t.translate(ExecutionCached(prompt_id="p", nodes=["1"], timestamp=6)).messages[0]
    assert cached["data"] == {"nodes": ["1"], "prompt_id": "p", "timestamp": 6}
    executing = t.translate(Executing(prompt_id="p", node_id="2", class_type="K", display_node="2", workflow=FLOW))
    assert _types(executing) == ["progress_state", "executing"]
    assert executing.messages[1]["data"] == {"node": "2", "display_node": "2", "prompt_id": "p"}
    preview = Preview("PNG", b"png")
    progress = t.translate(Progress(prompt_id="p", node_id="2", value=1, max=4, workflow=FLOW, preview=preview))
    # as ComfyUI's progress hook: the node's progress_state, then progress
    assert _types(progress) == ["progress_state", "progress"] and progress.preview is preview
    assert progress.messages[0]["data"]["nodes"]["2"]["value"] == 1
    done = t.translate(Executed(prompt_id="p", node_id="2", display_node="2", output={"images": []}))
    assert _types(done) == ["executed", "progress_state"]
    node = done.messages[1]["data"]["nodes"]["2"]
    assert node["state"] == "finished" and node["value"] == 4.0
    assert _types(t.translate(ExecutionSuccess(prompt_id="p"))) == ["execution_success"]


def _states(out: object) -> list[dict[str, tuple[str, float, float]]]:
    return [{n: (v["state"], v["value"], v["max"]) for n, v in m["data"]["nodes"].items()}
            for m in out.messages if m["type"] == "progress_state"]  # type: ignore[attr-defined]


def test_node_finished_and_next_node_running_are_separate_progress_states() -> None:
    """ComfyUI's sequence, which its editor keys node highlighting on: a node that ends without
    ``executed`` is reported finished in one progress_state, the next one running in another,
    before the next ``executing``; every value a float."""
    t = PromptTranslator("p")
    first = t.translate(Executing(prompt_id="p", node_id="1", class_type="A", display_node="1", workflow=FLOW))
    assert _types(first) == ["progress_state", "executing"]
    assert _states(first) == [{"1": ("running", 0.0, 1.0)}]
    t.translate(Progress(prompt_id="p", node_id="1", value=3, max=8, workflow=FLOW))
    second = t.translate(Executing(prompt_id="p", node_id="2", class_type="B", display_node="2", workflow=FLOW))
    assert _types(second) == ["progress_state", "progress_state", "executing"]
    assert _states(second) == [{"1": ("finished", 8.0, 8.0)},
                               {"1": ("finished", 8.0, 8.0), "2": ("running", 0.0, 1.0)}]
    for state in second.messages[:2]:
        assert all(isinstance(n[k], float) for n in state["data"]["nodes"].values() for k in ("value", "max"))


def test_a_fully_cached_prompt_reports_its_output_node_finished_after_executed() -> None:
    t = PromptTranslator("p")
    t.translate(ExecutionStart(prompt_id="p", timestamp=1))
    t.translate(ExecutionCached(prompt_id="p", nodes=["1", "2"], timestamp=2))
    out = t.translate(Executed(prompt_id="p", node_id="2", display_node="2", output={"images": []}))
    assert _types(out) == ["executed", "progress_state"]
    assert _states(out) == [{"2": ("finished", 1.0, 1.0)}]
    assert _types(t.translate(ExecutionSuccess(prompt_id="p"))) == ["execution_success"]


def test_node_error_marks_the_node_and_carries_the_exception() -> None:
    t = PromptTranslator("p")
    t.translate(Executing(prompt_id="p", node_id="3", class_type="F", display_node="3", workflow=FLOW))
    out = t.translate(ExecutionError(prompt_id="p", node_id="3", node_type="F", executed=["1"],
                                     exception_type="ValueError", exception_message="boom", traceback=["tb"],
                                     current_inputs={"x": [1]}, current_outputs={}))
    assert _types(out) == ["execution_error"]  # as ComfyUI: no progress_state for the failed node
    assert t.nodes["3"]["state"] == "error"
    data = out.messages[0]["data"]
    assert (data["node_id"], data["node_type"], data["exception_message"]) == ("3", "F", "boom")


def test_interrupt_names_the_node() -> None:
    out = PromptTranslator("p").translate(ExecutionInterrupted(prompt_id="p", node_id="2", node_type="K",
                                                               executed=["1"]))
    assert out.messages[0]["type"] == "execution_interrupted" and out.messages[0]["data"]["node_id"] == "2"


def test_preview_and_text_frames() -> None:
    preview = Preview("JPEG", b"jpg")
    plain = preview_frame(preview, node_id="2", prompt_id="p", with_metadata=False)
    assert struct.unpack(">II", plain[:8]) == (PREVIEW_IMAGE, 1) and plain[8:] == b"jpg"
    rich = preview_frame(preview, node_id="2", prompt_id="p", with_metadata=True)
    kind, length = struct.unpack(">II", rich[:8])
    meta = json.loads(rich[8:8 + length])
    assert kind == PREVIEW_IMAGE_WITH_METADATA and meta["image_type"] == "image/jpeg" and rich[8 + length:] == b"jpg"
    text = text_frame("7", "hello")
    assert struct.unpack(">II", text[:8]) == (TEXT, 1) and text[8:] == b"7hello"


def test_binary_requests_round_trip_and_bad_ones_are_refused() -> None:
    header, payload = parse_binary_request(binary_request({"op": "upload", "id": 1}, b"data"))
    assert header == {"op": "upload", "id": 1} and payload == b"data"
    for bad in (b"\x00", struct.pack(">I", 99) + b"{}", struct.pack(">I", 2) + b"[]"):
        with pytest.raises(ValueError):
            parse_binary_request(bad)


def test_an_interrupt_finds_the_next_node_started_as_comfyui_does() -> None:
    # ComfyUI: node 2 finished, node 3 running, executing 3, execution_interrupted (the node
    # starts, then its interrupt check fires): the editor's last state for node 2 is finished
    from graph_runtime import FolderPaths, NodeRegistry, Runtime
    from graph_runtime.context import InterruptFlag
    from tests.runtime import toynodes

    registry = NodeRegistry()
    for cls in toynodes.NODES:
        registry.add_node(cls, plugin="toynodes")
    flag = InterruptFlag()
    runtime = Runtime(registry, folders=FolderPaths(base=Path("/nonexistent-nodeloom-base")))
    translator, messages = PromptTranslator("p"), []

    def listen(event: object) -> None:
        messages.extend(translator.translate(event).messages)  # type: ignore[arg-type]
        if getattr(event, "node_id", None) == "3" and type(event).__name__ == "Executing":
            flag.set()  # the state of a press while node 2 runs, as node 3 starts

    prompt = {"1": {"class_type": "Number", "inputs": {"value": 1}},
              "2": {"class_type": "Double", "inputs": {"x": ["1", 0]}},
              "3": {"class_type": "Double", "inputs": {"x": ["2", 0]}},
              "4": {"class_type": "Collect", "inputs": {"value": ["3", 0]}}}
    runtime.execute(prompt, prompt_id="p", listeners=[listen], interrupt=flag)
    tail = [(m["type"], m["data"].get("node") or m["data"].get("node_id")) for m in messages][-4:]
    assert [t for t, _ in tail] == ["progress_state", "progress_state", "executing", "execution_interrupted"]
    assert tail[2][1] == "3" and tail[3][1] == "3"
    finished, running = (m["data"]["nodes"] for m in messages[-4:-2])
    assert finished["2"]["state"] == "finished" and running["3"]["state"] == "running"
