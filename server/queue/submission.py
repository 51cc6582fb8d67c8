"""Reading a POST /prompt body (or the websocket ``submit`` command) into a checked submission.
Everything refused here is a ``SubmissionError`` carrying ComfyUI's error body."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from graph_runtime.context import HookContext
from graph_runtime.formats import ApiPrompt, WorkflowFormatError, extra_pnginfo_problem, parse_workflow
from graph_runtime.input_limits import MAX_JSON_DEPTH, InputLimits, quote, too_deep
from graph_runtime.registry import NodeRegistry
from server.queue.webhooks import check_url
from server.wire.errors import error_body


class SubmissionError(Exception):
    """A prompt refused at submission: ``body`` is ComfyUI's ``{error, node_errors}``."""

    def __init__(self, body: dict[str, Any], status: int = 400) -> None:
        super().__init__(body.get("error", {}).get("message", "invalid prompt"))
        self.body = body
        self.status = status


def refuse(message: str, details: str = "", *, kind: str = "invalid_prompt", status: int = 400) -> SubmissionError:
    return SubmissionError(error_body(kind, message, details), status)


@dataclass(frozen=True)
class Submission:
    """A readable submission, not yet validated against the node schemas. ``targets``: output
    node ids to run (None: all); ``number``: an explicit queue position."""

    prompt: ApiPrompt
    extra_data: dict[str, Any]
    targets: list[str] | None
    prompt_id: str | None
    client_id: str | None
    number: float | None
    front: bool


def read_submission(body: dict[str, Any], registry: NodeRegistry, ctx: HookContext,
                    limits: InputLimits | None = None) -> Submission:
    """``body``: ``{prompt, client_id?, extra_data?, front?, number?, prompt_id?,
    partial_execution_targets?}``; ``prompt`` may also be a UI-format workflow (converted with
    ``registry``'s schemas, choices listed in ``ctx``'s folders). Raises SubmissionError."""
    limits = limits or InputLimits()
    extra = body.get("extra_data") or {}
    if not isinstance(extra, dict):
        raise refuse("extra_data must be an object")
    document = body.get("prompt")
    # The parsers refuse deeper JSON already; this holds for every caller, before anything is
    # stored (a stored value too deep to decode again breaks the queue and the history).
    for name, value in (("prompt", document), ("extra_data", extra)):
        if too_deep(value):
            raise refuse(f"{name} is nested too deeply", f"at most {MAX_JSON_DEPTH} levels")
    try:
        workflow = parse_workflow({"prompt": document} if _is_api(document) else document, registry, ctx=ctx)
    except (WorkflowFormatError, ImportError) as exc:
        raise refuse("Cannot read the prompt", str(exc)) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise refuse("Cannot convert the workflow", str(exc)) from None
    extra = {**workflow.extra_data, **extra}
    if (problem := extra_pnginfo_problem(extra.get("extra_pnginfo"))) is not None:
        raise refuse(problem)
    if "webhook_url" in extra and (problem := check_url(extra["webhook_url"])) is not None:
        raise refuse(problem)
    targets = body.get("partial_execution_targets")
    if targets is not None and not (isinstance(targets, list) and all(isinstance(t, str) for t in targets)):
        raise refuse("partial_execution_targets must be a list of node ids")
    if targets is not None:
        targets = _output_targets(workflow.prompt, targets, registry)
    prompt_id = body.get("prompt_id") or None
    if prompt_id is not None and not isinstance(prompt_id, str):
        raise refuse("prompt_id must be a new, unique string")
    client_id = body.get("client_id")
    if not isinstance(client_id, str):
        client_id = extra.get("client_id") if isinstance(extra.get("client_id"), str) else None
    for name, value in (("prompt_id", prompt_id), ("client_id", client_id)):
        if value is not None and (problem := id_problem(value, limits.identifier_chars)) is not None:
            raise refuse(f"{name} {problem}", quote(value.encode("utf-8", "backslashreplace").decode()))
    if client_id is not None:
        extra["client_id"] = client_id
    number = body.get("number")
    if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float))
                               or not math.isfinite(number)):
        raise refuse("number must be a finite number")
    return Submission(workflow.prompt, extra, targets, prompt_id, client_id, number,
                      bool(body.get("front")))


def _output_targets(prompt: ApiPrompt, targets: list[str], registry: NodeRegistry) -> list[str]:
    """As ComfyUI's partial execution: the output nodes among ``targets`` (ids not in the prompt and
    nodes that are not outputs are passed over; a node of an unknown type stays, for validation to
    name); none left is ComfyUI's ``prompt_no_outputs``."""
    kept = []
    for target in targets:
        node = prompt.get(target)
        if not isinstance(node, dict):
            continue
        class_type = node.get("class_type")
        cls = registry.nodes.get(class_type) if isinstance(class_type, str) else None
        if cls is None or cls.output_node:
            kept.append(target)
    if not kept:
        raise refuse("Prompt has no outputs", "partial_execution_targets names no output node of the prompt",
                     kind="prompt_no_outputs")
    return kept


def id_problem(value: str, limit: int) -> str | None:
    """Why ``value`` cannot be a prompt or client id, or None. Ids are stored as SQLite text and
    sent in every message: a lone surrogate cannot be encoded there, and a huge one is echoed."""
    if len(value) > limit:
        return f"is too long: {len(value)} characters, at most {limit}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 text"
    return None


def _is_api(document: Any) -> bool:
    return isinstance(document, dict) and all(isinstance(v, dict) and "class_type" in v for v in document.values())
