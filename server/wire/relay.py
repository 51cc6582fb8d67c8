"""Fan one translated event out to the websocket hub: JSON messages to the prompt's client (or to
all when it has none), previews and text as binary frames."""

from __future__ import annotations

from typing import Any

from server.wire.hub import Hub
from server.wire.protocol import Outgoing, preview_frame, text_frame

# Messages kept in a prompt's history entry (``status.messages``), as ComfyUI keeps them.
HISTORY_MESSAGES = frozenset({"execution_start", "execution_cached", "execution_success",
                              "execution_error", "execution_interrupted"})


def relay(hub: Hub, client_id: str | None, prompt_id: str, out: Outgoing) -> list[list[Any]]:
    """Send ``out``; returns the ``[type, data]`` pairs the history keeps."""
    kept = []
    for msg in out.messages:
        if msg["type"] in HISTORY_MESSAGES:
            kept.append([msg["type"], msg["data"]])
        hub.send(client_id, msg)
    if out.preview is not None and out.node_id is not None and hub.listens(client_id):
        hub.send_binary(client_id,
                        preview_frame(out.preview, node_id=out.node_id, prompt_id=prompt_id, with_metadata=False),
                        preview_frame(out.preview, node_id=out.node_id, prompt_id=prompt_id, with_metadata=True))
    if out.text is not None and out.node_id is not None:
        frame = text_frame(out.node_id, out.text)
        hub.send_binary(client_id, frame, frame)
    return kept
