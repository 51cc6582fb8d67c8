"""How a run ended, in one shape wherever it is read: the worker reports it, the queue stores it,
/history, /jobs, the websocket ``execution_error`` message and completion webhooks derive from it.

A run either ends as a ``RunOutcome`` (every output ran, or it was interrupted) or as a
``RunFailure`` whose ``kind`` says where it failed:

- ``validation``: the worker refused the workflow (``validation`` holds ComfyUI's
  ``{error, node_errors}`` body);
- ``node``: a node raised (``node_id``, ``node_type``, the exception and its traceback);
- ``internal``: the runtime itself raised outside any node;
- ``worker_died``: the process running it died (signal or exit code in the message);
- ``server_restart``: the server stopped while it ran, too many times to retry.
"""

from __future__ import annotations

import traceback as tb
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

from graph_runtime.events import ExecutionError
from graph_runtime.validation import WorkflowInvalid

FailureKind = Literal["validation", "node", "internal", "worker_died", "server_restart"]
FAILURE_KINDS: tuple[str, ...] = get_args(FailureKind)


@dataclass(frozen=True)
class RunOutcome:
    """A run that did not fail. ``outputs``: UI payloads of the output nodes that ran, by node id
    (ComfyUI's history ``outputs``)."""

    status: Literal["success", "interrupted"]
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunFailure:
    """A run that failed; see the module docstring for ``kind``. ``outputs`` holds what output
    nodes made before the failure."""

    kind: FailureKind
    exception_type: str
    exception_message: str
    node_id: str | None = None
    node_type: str | None = None
    traceback: tuple[str, ...] = ()
    executed: tuple[str, ...] = ()
    validation: dict[str, Any] | None = None
    outputs: dict[str, Any] = field(default_factory=dict)

    status: ClassVar[Literal["error"]] = "error"

    def __post_init__(self) -> None:
        assert self.kind in FAILURE_KINDS, f"unknown failure kind {self.kind!r}; expected one of {FAILURE_KINDS}"

    @classmethod
    def of_node(cls, event: ExecutionError, outputs: dict[str, Any] | None = None) -> RunFailure:
        return cls("node", event.exception_type, event.exception_message, node_id=event.node_id,
                   node_type=event.node_type, traceback=tuple(event.traceback),
                   executed=tuple(event.executed), outputs=outputs or {})

    @classmethod
    def of_invalid(cls, invalid: WorkflowInvalid) -> RunFailure:
        # The first node at fault names the failure, as a node exception does (the editor shows it).
        first = invalid.result.node_errors[0] if invalid.result.node_errors else None
        return cls("validation", "WorkflowInvalid", invalid.result.format(),
                   node_id=first.node_id if first else None, node_type=first.class_type if first else None,
                   validation=invalid.result.to_comfy())

    @classmethod
    def of_exception(cls, exc: BaseException) -> RunFailure:
        return cls("internal", type(exc).__name__, str(exc), traceback=tuple(tb.format_exception(exc)))

    @property
    def sent_as_event(self) -> bool:
        """Whether clients already got the ``execution_error`` message from the run's own events
        (a node failure); every other kind is announced by the queue."""
        return self.kind == "node"

    def as_dict(self) -> dict[str, Any]:
        """The stored and reported error: ``{type: kind, exception_type, exception_message,
        node_id, node_type, traceback, executed[, validation]}`` (history ``status.error``, the
        ``error`` of a webhook and of POST /prompt?wait)."""
        body: dict[str, Any] = {"type": self.kind, "exception_type": self.exception_type,
                                "exception_message": self.exception_message, "node_id": self.node_id,
                                "node_type": self.node_type, "traceback": list(self.traceback),
                                "executed": list(self.executed)}
        if self.validation is not None:
            body["validation"] = self.validation
        return body

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> RunFailure:
        """Read back ``as_dict()``; rows written by earlier versions (``{type, message}``) too."""
        kind = body.get("type")
        message = body.get("exception_message", body.get("message", "the prompt failed"))
        return cls(kind if kind in FAILURE_KINDS else "internal",  # type: ignore[arg-type]
                   str(body.get("exception_type") or kind or "Error"), str(message),
                   node_id=_text_or_none(body.get("node_id")), node_type=_text_or_none(body.get("node_type")),
                   traceback=tuple(str(line) for line in body.get("traceback") or ()),
                   executed=tuple(str(node) for node in body.get("executed") or ()),
                   validation=body.get("validation") if isinstance(body.get("validation"), dict) else None)

    def execution_error(self, prompt_id: str) -> dict[str, Any]:
        """ComfyUI's ``execution_error`` message data (websocket and history ``messages``)."""
        return {"prompt_id": prompt_id, "node_id": self.node_id, "node_type": self.node_type,
                "executed": list(self.executed), "exception_message": self.exception_message,
                "exception_type": self.exception_type, "traceback": list(self.traceback),
                "current_inputs": {}, "current_outputs": {}}

    def job_error(self, prompt_id: str) -> dict[str, Any]:
        """The editor's Jobs API ``execution_error``: every field present, ids as strings."""
        return {"prompt_id": prompt_id, "node_id": self.node_id or "", "node_type": self.node_type or "",
                "exception_message": self.exception_message, "exception_type": self.exception_type,
                "traceback": list(self.traceback)}


RunResult = RunOutcome | RunFailure


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
