"""graph_runtime events as ComfyUI's websocket messages, the binary frames, native envelopes."""

from __future__ import annotations

import json
import struct

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
    assert _types(progress) == ["progress", "progress_state"] and progress.preview is preview
    assert progress.messages[1]["data"]["nodes"]["2"]["value"] == 1
    done = t.translate(Executed(prompt_id="p", node_id="2", display_node="2", output={"images": []}))
    assert _types(done) == ["progress_state", "executed"]
    node = done.messages[0]["data"]["nodes"]["2"]
    assert node["state"] == "finished" and node["value"] == 4
    assert _types(t.translate(ExecutionSuccess(prompt_id="p"))) == ["progress_state", "execution_success"]


def test_node_error_marks_the_node_and_carries_the_exception() -> None:
    t = PromptTranslator("p")
    t.translate(Executing(prompt_id="p", node_id="3", class_type="F", display_node="3", workflow=FLOW))
    out = t.translate(ExecutionError(prompt_id="p", node_id="3", node_type="F", executed=["1"],
                                     exception_type="ValueError", exception_message="boom", traceback=["tb"],
                                     current_inputs={"x": [1]}, current_outputs={}))
    assert _types(out) == ["progress_state", "execution_error"]
    assert out.messages[0]["data"]["nodes"]["3"]["state"] == "error"
    data = out.messages[1]["data"]
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
