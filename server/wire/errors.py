"""ComfyUI's error body, ``{"error": {type, message, details, extra_info}, "node_errors": {}}``,
which every refused request answers with (POST /prompt, the websocket ``submit`` command, bad
request bodies)."""

from __future__ import annotations

from typing import Any

from graph_runtime.validation import comfy_error


def error_body(kind: str, message: str, details: Any = "", *,
               node_errors: dict[str, Any] | None = None) -> dict[str, Any]:
    """``kind``: ComfyUI's error type (``invalid_prompt``, ``no_prompt``, …); ``details``: a
    string, or a list of per-field problems for malformed request bodies."""
    return {"error": comfy_error(kind, message, details), "node_errors": node_errors or {}}
