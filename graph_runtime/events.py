"""Typed execution events, delivered to subscribers (CLI progress bar, server, tests).

They carry what ComfyUI's websocket messages carry, plus a whole-workflow progress figure. The
executor only emits these; translating them to wire messages is the subscriber's business.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Preview:
    """An encoded preview image sent with a progress report."""

    image_type: Literal["JPEG", "PNG", "WEBP"]
    data: bytes


@dataclass(frozen=True, kw_only=True)
class Event:
    prompt_id: str
    timestamp: int = field(default_factory=_now_ms)


@dataclass(frozen=True, kw_only=True)
class WorkflowProgress:
    """How far the whole run is: nodes finished (executed or cached) out of nodes to run."""

    nodes_done: int
    nodes_total: int
    # Finished nodes plus the running node's own fraction, over nodes_total: a smooth 0..1 figure.
    fraction: float


@dataclass(frozen=True, kw_only=True)
class ExecutionStart(Event):
    nodes_total: int = 0


@dataclass(frozen=True, kw_only=True)
class ExecutionCached(Event):
    nodes: list[str]


@dataclass(frozen=True, kw_only=True)
class Executing(Event):
    node_id: str
    class_type: str
    display_node: str
    workflow: WorkflowProgress


@dataclass(frozen=True, kw_only=True)
class Progress(Event):
    node_id: str
    value: float
    max: float
    workflow: WorkflowProgress
    preview: Preview | None = None
    text: str | None = None


@dataclass(frozen=True, kw_only=True)
class Executed(Event):
    node_id: str
    display_node: str
    output: dict[str, Any]
    cached: bool = False


@dataclass(frozen=True, kw_only=True)
class ExecutionError(Event):
    node_id: str
    node_type: str
    executed: list[str]
    exception_type: str
    exception_message: str
    traceback: list[str]
    current_inputs: dict[str, Any]
    current_outputs: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class ExecutionInterrupted(Event):
    node_id: str | None
    node_type: str | None
    executed: list[str]


@dataclass(frozen=True, kw_only=True)
class ExecutionSuccess(Event):
    pass


Listener = Callable[[Event], None]


class EventBus:
    """Fans events out to subscribers. A failing subscriber is dropped from this delivery only:
    a broken progress bar must never fail a run."""

    def __init__(self, listeners: list[Listener] | None = None) -> None:
        self._listeners: list[Listener] = list(listeners or [])

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def emit(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - subscribers are outside the run's responsibility
                import logging

                logging.getLogger(__name__).exception("event listener %r failed", listener)
