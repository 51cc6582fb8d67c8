"""The execution-pool interface the queue schedules onto.

The scheduler owns the queue order; a pool owns placement (which worker runs a job) and the
workers' lives. The local worker processes (``server.execution.local``) are the first
implementation; a cluster one only has to implement ``ExecutionPool`` and call its listener on
the event-loop thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from graph_runtime.events import Event
from server.execution.messages import Job, NodeSchemas
from server.execution.outcome import RunResult


@dataclass(frozen=True)
class WorkerRef:
    """Which worker a report comes from: its index in the pool, device and process id."""

    index: int
    device: str
    pid: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "device": self.device, "pid": self.pid}


class PoolListener(Protocol):
    """What a pool reports, always on the event-loop thread."""

    def on_ready(self, worker: WorkerRef, schemas: NodeSchemas) -> None:
        """A worker started (or restarted) and can take jobs."""

    def on_event(self, worker: WorkerRef, event: Event) -> None:
        """A graph_runtime event of a running job."""

    def on_finished(self, worker: WorkerRef | None, prompt_id: str, result: RunResult) -> None:
        """A submitted job ended: its outcome, or a failure (a worker that died holding it
        included, ``kind == "worker_died"``)."""

    def on_dropped(self, prompt_id: str) -> None:
        """A submitted job was discarded unrun after ``cancel`` or ``interrupt``."""

    def on_returned(self, prompt_ids: list[str]) -> None:
        """Submitted jobs handed back unrun (their worker died before starting them): the
        scheduler queues them again."""


class ExecutionPool(Protocol):
    """Runs jobs somewhere; every method is called on the event-loop thread."""

    async def start(self, listener: PoolListener) -> None:
        """Start the workers; reports go to ``listener`` from now on."""

    async def stop(self) -> None:
        """Stop every worker (a running job is abandoned)."""

    def submit(self, job: Job) -> bool:
        """Hand ``job`` to a worker; False when no worker can take it now (the scheduler tries
        again on the next report). Placement prefers a worker holding ``job.models``; a
        ``job.long_running`` job never makes the short jobs wait when another worker exists."""

    def has_capacity(self) -> bool:
        """Whether some worker could take a job now (so the scheduler need not try each)."""

    def cancel(self, prompt_id: str) -> bool:
        """Discard a submitted job (interrupt it if it runs); False when no worker holds it."""

    def interrupt(self, prompt_id: str | None) -> list[str]:
        """Interrupt ``prompt_id`` where it runs, or every running job; the prompt ids hit."""

    def free(self) -> None:
        """Unload models and clear caches on every worker; forget model placement."""

    def stats(self) -> list[dict[str, Any]]:
        """One entry per worker: ``{index, device, pid, state, running, queued, restarts, models,
        model_manager, resources, cache}`` (``resources``: every plugin's report by name)."""

    async def schemas(self, timeout: float = 30.0) -> NodeSchemas | None:
        """Fresh node schemas from a ready worker; None when none answers in ``timeout`` s."""
