"""Wire messages: graph_runtime events translated to ComfyUI's websocket messages (same names,
same shapes), the binary preview frames, and our native request/response envelope."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import pydantic_core

from graph_runtime.events import (
    Event, Executed, Executing, ExecutionCached, ExecutionError, ExecutionInterrupted,
    ExecutionStart, ExecutionSuccess, Preview, Progress,
)

# Binary frame event types (big-endian uint32 first in the frame), as ComfyUI.
PREVIEW_IMAGE = 1
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4
IMAGE_TYPES = {"JPEG": 1, "PNG": 2, "WEBP": 3}
MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}

# Close code for a client that reads too slowly to keep up (private-use range of RFC 6455).
CLOSE_TOO_SLOW = 4008

FEATURE_FLAGS: dict[str, Any] = {"supports_preview_metadata": True, "nodeloom_commands": True}

Message = dict[str, Any]


def message(kind: str, data: Any) -> Message:
    return {"type": kind, "data": data}


def status_message(queue_remaining: int, sid: str | None = None) -> Message:
    data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": queue_remaining}}}
    if sid is not None:
        data["sid"] = sid
    return message("status", data)


def preview_frame(preview: Preview, *, node_id: str, prompt_id: str, with_metadata: bool) -> bytes:
    if with_metadata:
        meta = json.dumps({"node_id": node_id, "prompt_id": prompt_id, "display_node_id": node_id,
                           "parent_node_id": node_id, "real_node_id": node_id,
                           "image_type": MIME_TYPES[preview.image_type]}).encode()
        return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(meta)) + meta + preview.data
    return struct.pack(">II", PREVIEW_IMAGE, IMAGE_TYPES[preview.image_type]) + preview.data


def text_frame(node_id: str, text: str) -> bytes:
    node = node_id.encode()
    return struct.pack(">II", TEXT, len(node)) + node + text.encode()


@dataclass
class Outgoing:
    """What one event becomes: JSON messages, plus an optional preview for binary frames."""

    messages: list[Message] = field(default_factory=list)
    preview: Preview | None = None
    text: str | None = None
    node_id: str | None = None


@dataclass
class PromptTranslator:
    """Translates one prompt's events, keeping the per-node state progress_state reports."""

    prompt_id: str
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    running: str | None = None

    def translate(self, event: Event, *, listening: bool = True) -> Outgoing:
        """``listening``: whether anyone gets the messages; when not, the node states are still
        kept but no progress_state (a copy of every node's state, per event) is built."""
        pid = self.prompt_id
        out = Outgoing()
        if isinstance(event, ExecutionStart):
            out.messages.append(message("execution_start", {"prompt_id": pid, "timestamp": event.timestamp}))
        elif isinstance(event, ExecutionCached):
            out.messages.append(message("execution_cached", {"nodes": event.nodes, "prompt_id": pid,
                                                             "timestamp": event.timestamp}))
        elif isinstance(event, Executing):
            # As ComfyUI: "node finished" and "next node running" are two progress_state
            # messages, and the running one comes before the node's ``executing``.
            if self._finish_running():
                self._report_state(out, listening)
            self.running = event.node_id
            self._set(event.node_id, 0.0, 1.0, "running")
            self._report_state(out, listening)
            out.messages.append(message("executing", {"node": event.node_id, "display_node": event.display_node,
                                                      "prompt_id": pid}))
        elif isinstance(event, Progress):
            # As ComfyUI: the node's progress_state, then ``progress``.
            self._set(event.node_id, event.value, event.max, "running")
            self._report_state(out, listening)
            out.messages.append(message("progress", {"value": event.value, "max": event.max,
                                                     "prompt_id": pid, "node": event.node_id}))
            out.preview, out.text, out.node_id = event.preview, event.text, event.node_id
        elif isinstance(event, Executed):
            out.messages.append(message("executed", {"node": event.node_id, "display_node": event.display_node,
                                                     "output": event.output, "prompt_id": pid}))
            # Then the node is finished; a cached output node (never running) is reported too.
            if event.node_id == self.running:
                self._finish_running()
            else:
                self._set(event.node_id, 1.0, 1.0, "finished")
            self._report_state(out, listening)
        elif isinstance(event, ExecutionSuccess):
            if self._finish_running():
                self._report_state(out, listening)
            out.messages.append(message("execution_success", {"prompt_id": pid, "timestamp": event.timestamp}))
        elif isinstance(event, ExecutionError):
            # ComfyUI sends no progress_state for a failed node: execution_error says it all.
            if event.node_id in self.nodes:
                self.nodes[event.node_id]["state"] = "error"
            out.messages.append(message("execution_error", error_data(event)))
        elif isinstance(event, ExecutionInterrupted):
            out.messages.append(message("execution_interrupted", {
                "prompt_id": pid, "node_id": event.node_id, "node_type": event.node_type,
                "executed": event.executed, "timestamp": event.timestamp}))
        return out

    def _set(self, node_id: str, value: float, maximum: float, state: str) -> None:
        # Floats, as ComfyUI's progress registry keeps them (a client may divide without care).
        self.nodes[node_id] = {"value": float(value), "max": float(maximum), "state": state, "node_id": node_id,
                               "prompt_id": self.prompt_id, "display_node_id": node_id,
                               "parent_node_id": None, "real_node_id": node_id}

    def _finish_running(self) -> bool:
        """Mark the running node finished (value = max); whether there was one."""
        running, self.running = self.running, None
        if running is None or running not in self.nodes:
            return False
        entry = self.nodes[running]
        entry.update(state="finished", value=entry["max"])
        return True

    def _report_state(self, out: Outgoing, listening: bool) -> None:
        if listening:  # a copy of every node's state so far: O(nodes) per event
            out.messages.append(message("progress_state", {
                "prompt_id": self.prompt_id, "nodes": {k: dict(v) for k, v in self.nodes.items()}}))


def error_data(event: ExecutionError) -> dict[str, Any]:
    return {"prompt_id": event.prompt_id, "node_id": event.node_id, "node_type": event.node_type,
            "executed": event.executed, "exception_message": event.exception_message,
            "exception_type": event.exception_type, "traceback": event.traceback,
            "current_inputs": event.current_inputs, "current_outputs": event.current_outputs,
            "timestamp": event.timestamp}


# -- native commands ------------------------------------------------------------------------

def response(request_id: Any, data: Any) -> Message:
    return {"type": "response", "id": request_id, "ok": True, "data": data}


def error_response(request_id: Any, status: int, error: Any) -> Message:
    return {"type": "response", "id": request_id, "ok": False, "status": status, "error": error}


def parse_json(text: str | bytes) -> Any:
    """A client's JSON, read by the parser that reads HTTP bodies (pydantic's), so both refuse
    the same things: nesting deeper than about MAX_JSON_DEPTH levels (json.loads accepts ~1000,
    which then break the store and the workers), lone surrogates, malformed text. ValueError."""
    try:
        return pydantic_core.from_json(text)
    except ValueError as exc:
        if "recursion limit" in str(exc):
            raise ValueError("JSON nested too deeply") from None
        raise


def parse_binary_request(frame: bytes) -> tuple[dict[str, Any], bytes]:
    """A client's binary frame: uint32 header length, JSON header, then the payload bytes."""
    if len(frame) < 4:
        raise ValueError("binary frame shorter than its 4-byte header length")
    (length,) = struct.unpack(">I", frame[:4])
    if length > len(frame) - 4:
        raise ValueError("binary frame header length exceeds the frame")
    header = parse_json(frame[4:4 + length])
    if not isinstance(header, dict):
        raise ValueError("binary frame header must be a JSON object")
    return header, frame[4 + length:]


def binary_request(header: dict[str, Any], payload: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack(">I", len(encoded)) + encoded + payload
