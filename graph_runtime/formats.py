"""Workflow formats: ComfyUI's API format (our native format), its wrappers, and detection of the
UI format (converted by :mod:`graph_runtime.ui_format`).

API format: ``{"<id>": {"class_type": str, "inputs": {name: value | [source_id, output_index]},
"_meta": {"title": str}}}``. Also accepted: ``{"prompt": {...}, "extra_data": {...}}`` (the body
of ComfyUI's POST /prompt) and a file holding extra metadata beside ``prompt``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graph_runtime.context import HookContext
    from graph_runtime.registry import NodeRegistry

ApiPrompt = dict[str, dict[str, Any]]


class WorkflowFormatError(ValueError):
    """The document is not a workflow in any format we read."""


@dataclass
class Workflow:
    prompt: ApiPrompt
    extra_data: dict[str, Any] = field(default_factory=dict)
    # The UI-format document, when the workflow came as one (SaveImage embeds it).
    ui_workflow: dict[str, Any] | None = None


def is_link(value: Any) -> bool:
    """A ``[source_id, output_index]`` pair, as ComfyUI reads inputs."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int)
            and not isinstance(value[1], bool))


def is_ui_format(document: Any) -> bool:
    return isinstance(document, dict) and isinstance(document.get("nodes"), list) and (
        "links" in document or document.get("version") is not None)


def is_api_format(document: Any) -> bool:
    return isinstance(document, dict) and bool(document) and all(
        isinstance(node, dict) and "class_type" in node for node in document.values())


def parse_workflow(document: Any, registry: NodeRegistry | None = None, *,
                   ctx: HookContext | None = None) -> Workflow:
    """Read any supported workflow document. UI format needs the registry (node schemas) and the
    context whose folders its computed COMBO choices come from."""
    if isinstance(document, dict) and isinstance(document.get("prompt"), dict):
        extra = document.get("extra_data") or {}
        if not isinstance(extra, dict):
            raise WorkflowFormatError("'extra_data' must be an object")
        if (problem := extra_pnginfo_problem(extra.get("extra_pnginfo"))) is not None:
            raise WorkflowFormatError(problem)
        ui = (extra.get("extra_pnginfo") or {}).get("workflow")
        return Workflow(_normalise(document["prompt"]), dict(extra), ui if isinstance(ui, dict) else None)
    if is_ui_format(document):
        if registry is None or ctx is None:
            raise WorkflowFormatError("a UI-format workflow needs the node schemas and folders to convert")
        from graph_runtime.ui_format import ui_to_api

        return Workflow(ui_to_api(document, registry, ctx), {"extra_pnginfo": {"workflow": document}}, document)
    if isinstance(document, dict) and (not document or is_api_format(document)):
        return Workflow(_normalise(document))
    raise WorkflowFormatError(
        "not a workflow: expected ComfyUI's API format ({id: {class_type, inputs}}), "
        "{'prompt': {...}}, or a UI-format file (nodes + links)")


# A PNG text chunk's keyword: 1 to 79 Latin-1 characters, NUL excluded (it ends the keyword).
MAX_PNG_KEYWORD = 79


def extra_pnginfo_problem(extra_pnginfo: Any) -> str | None:
    """Why ``extra_data.extra_pnginfo`` cannot be saved, or None. SaveImage writes one text chunk
    per key, so it must be an object whose keys are PNG keywords: anything else would fail the
    run at its last node, or be dropped (an empty key) or cut at a NUL by every PNG reader."""
    if extra_pnginfo is None:
        return None
    if not isinstance(extra_pnginfo, dict):
        return ("extra_data.extra_pnginfo must be an object (one PNG text chunk per key), "
                f"got {type(extra_pnginfo).__name__}")
    for key in extra_pnginfo:
        if not 1 <= len(key) <= MAX_PNG_KEYWORD or any(not 0 < ord(c) <= 0xFF for c in key):
            return (f"extra_data.extra_pnginfo key {key[:100]!r} cannot name a PNG text chunk: "
                    f"a keyword is 1 to {MAX_PNG_KEYWORD} Latin-1 characters without NUL")
    return None


def load_workflow_file(path: Path, registry: NodeRegistry | None = None, *,
                       ctx: HookContext | None = None) -> Workflow:
    """A workflow file (API or UI JSON, or a PNG carrying one); see ``parse_workflow``."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        from graph_runtime.png import read_png_workflow

        return read_png_workflow(path, registry, ctx=ctx)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise WorkflowFormatError(f"{path}: not valid JSON ({exc})") from exc
    return parse_workflow(document, registry, ctx=ctx)


def _normalise(prompt: Any) -> ApiPrompt:
    """Node ids as strings (also inside links); the structure is checked by validation."""
    if not isinstance(prompt, dict):
        raise WorkflowFormatError("the prompt must be an object of nodes keyed by id")
    result: ApiPrompt = {}
    for node_id, node in prompt.items():
        if isinstance(node, dict) and isinstance(node.get("inputs"), dict):
            inputs = {name: [str(v[0]), v[1]] if is_link(v) else v for name, v in node["inputs"].items()}
            node = {**node, "inputs": inputs}
        result[str(node_id)] = node
    return result


def apply_overrides(prompt: ApiPrompt, assignments: list[str]) -> ApiPrompt:
    """Apply ``NODE.INPUT=VALUE`` overrides (VALUE parsed as JSON when it parses, else a string),
    e.g. ``3.seed=42`` or ``6.text="a red mug"``. Returns a new prompt."""
    result = {node_id: {**node, "inputs": dict(node.get("inputs", {}))} for node_id, node in prompt.items()}
    for assignment in assignments:
        target, sep, raw = assignment.partition("=")
        node_id, dot, input_name = target.partition(".")
        if not sep or not dot or not node_id or not input_name:
            raise WorkflowFormatError(f"override {assignment!r} is not NODE.INPUT=VALUE")
        if node_id not in result:
            raise WorkflowFormatError(f"override {assignment!r}: no node {node_id!r} in the workflow")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        result[node_id]["inputs"][input_name] = value
    return result
