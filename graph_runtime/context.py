"""The narrow view of the runtime a node runs against: progress, interrupt, folders, services."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from graph_runtime.events import Preview
from graph_runtime.folders import FolderPaths

T = TypeVar("T")


class Interrupted(Exception):
    """Raised inside a run when its interrupt was requested; ends the run as interrupted."""


class InterruptFlag:
    """Per-run interrupt request. Nodes see it through ``ctx.check_interrupted()`` and
    ``ctx.progress()``; the executor checks it between nodes."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        self._event.clear()


class Services:
    """Long-lived objects shared by nodes across runs in one process (model managers, detectors).
    Created lazily by the first node that asks, so a process that never samples never loads one."""

    def __init__(self, **initial: Any) -> None:
        self._objects: dict[str, Any] = dict(initial)
        self._lock = threading.Lock()

    def get_or_create(self, name: str, factory: Callable[[], T]) -> T:
        with self._lock:
            if name not in self._objects:
                self._objects[name] = factory()
            return self._objects[name]

    def get(self, name: str) -> Any | None:
        return self._objects.get(name)

    def set(self, name: str, value: Any) -> None:
        with self._lock:
            self._objects[name] = value

    def items(self) -> list[tuple[str, Any]]:
        return list(self._objects.items())


@dataclass(frozen=True)
class HookContext:
    """What a node's class-level hooks may look at outside their inputs: ``fingerprint``,
    ``validate_inputs`` and computed COMBO choices receive it. It carries the folders of the run
    (the server's or the command's ``--base``), never a process-wide global."""

    folders: FolderPaths


ProgressSink = Callable[[str, float, float, Preview | None, str | None], None]


@dataclass
class Context:
    """What a node's ``run`` may use. One per node execution."""

    prompt_id: str
    node_id: str
    class_type: str
    folders: FolderPaths
    services: Services
    interrupt: InterruptFlag
    report_progress: ProgressSink
    extra_data: dict[str, Any]

    def progress(self, value: float, max: float, preview: Preview | None = None,
                 text: str | None = None) -> None:
        """Report progress (``value`` of ``max``, both numbers); also a point where an interrupt
        takes effect."""
        for name, number in (("value", value), ("max", max)):
            if isinstance(number, (bool, str, bytes)) or not hasattr(type(number), "__float__"):
                raise TypeError(f"node {self.node_id} ({self.class_type}): ctx.progress(value, max) "
                                f"takes numbers, got {name}={number!r}")
        self.check_interrupted()
        self.report_progress(self.node_id, value, max, preview, text)

    def check_interrupted(self) -> None:
        if self.interrupt.is_set():
            raise Interrupted(f"run {self.prompt_id} interrupted at node {self.node_id}")
