"""The local ``ExecutionPool``: one worker process per device, started, fed, watched and restarted.

Each process is a fresh ``python -m server.execution.worker`` (it inherits nothing of the server
and imports torch only if its node packs do; started with subprocess rather than
multiprocessing's spawn, which would add a resource-tracker process and re-import the server's
main module). A reader thread per worker turns what the pipe delivers into calls on the event
loop, so every piece of scheduling state is touched by one thread only. A worker that dies —
segfault, OOM kill, kill -9 — is noticed by its pipe closing; the pool fails the prompt it was
running, hands back the others, and starts a fresh process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from graph_runtime.events import Event, Executing, ExecutionStart
from server.execution import placement
from server.execution.messages import (
    Cancel, Done, Dropped, Events, Failed, Free, Freed, FromWorker, Interrupt, Job, NodeSchemas, Ready, Run,
    SchemasReply, SchemasRequest, Stop, WorkerConfig, WorkerEvent,
)
from server.execution.outcome import RunFailure
from server.execution.pool import PoolListener
from server.execution.process import PREFETCH, WorkerHandle, exit_reason
from server.settings import ServerSettings

log = logging.getLogger(__name__)

# Output-file write threads per worker (PNG encoding releases the GIL: one more core in use).
WRITE_THREADS = 1


class LocalWorkerPool:
    """``ExecutionPool`` over local processes; ``make_config(device)`` configures each one."""

    def __init__(self, devices: list[str], make_config: Callable[[str], WorkerConfig]) -> None:
        assert devices, "a pool needs at least one device"
        self.workers = [WorkerHandle(index=i, device=d) for i, d in enumerate(devices)]
        self._make_config = make_config
        self._listener: PoolListener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._schema_waiters: dict[int, asyncio.Future[NodeSchemas]] = {}
        self._next_request = 0
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, listener: PoolListener) -> None:
        self._listener = listener
        self._loop = asyncio.get_running_loop()
        for worker in self.workers:
            self._spawn(worker)

    async def stop(self) -> None:
        self._closing = True
        for worker in self.workers:
            worker.send(Stop())
            worker.state = "stopped"
        await asyncio.get_running_loop().run_in_executor(None, self._wait_all, 5.0)

    def _wait_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            if worker.process is None:
                continue
            try:
                worker.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait(timeout=2)
            if worker.conn is not None:
                worker.conn.close()

    def _spawn(self, worker: WorkerHandle) -> None:
        conn = worker.spawn(self._make_config(worker.device))
        threading.Thread(target=self._read, args=(worker, conn, worker.process), daemon=True,
                         name=f"worker-reader-{worker.index}").start()

    def _read(self, worker: WorkerHandle, conn: Connection, process: Any) -> None:
        assert self._loop is not None
        call = self._loop.call_soon_threadsafe
        failure = ""
        while True:
            try:
                received = conn.recv()
            except (EOFError, OSError):
                break
            except Exception as exc:  # noqa: BLE001 - an unpicklable message must not stop reading
                log.exception("bad message from worker %s", worker.device)
                failure = f"unreadable message: {exc}"
                continue
            if isinstance(received, Failed):
                failure = received.reason
                continue
            try:
                call(self._receive, worker, process, received)
            except RuntimeError:  # the loop is closed: the server is shutting down
                return
        try:
            exitcode = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            exitcode = None
        try:
            call(self._on_exit, worker, process, exitcode, failure)
        except RuntimeError:
            return

    def _receive(self, worker: WorkerHandle, process: Any, received: FromWorker) -> None:
        if worker.process is not process or self._closing:
            return  # a message from a worker we already replaced, or while shutting down
        assert self._listener is not None
        match received:
            case Ready(schemas=schemas):
                worker.mark_ready()
                worker.failures_in_a_row = 0
                self._listener.on_ready(worker.ref, schemas)
            case WorkerEvent(event=event):
                self._event(worker, event)
            case Events(events=events):
                for event in events:
                    self._event(worker, event)
            case Done(prompt_id=prompt_id, result=result, resources=stats, cache_stats=cache):
                worker.forget(prompt_id)
                worker.resources, worker.cache_stats = stats, cache
                self._listener.on_finished(worker.ref, prompt_id, result)
            case Freed(resources=stats, cache_stats=cache):
                worker.resources, worker.cache_stats = stats, cache
            case Dropped(prompt_id=prompt_id):
                worker.forget(prompt_id)
                self._listener.on_dropped(prompt_id)
            case SchemasReply(request_id=request, schemas=schemas):
                waiter = self._schema_waiters.pop(request, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(schemas)
            case _:
                log.error("unexpected message from worker %s: %r", worker.device, received)

    def _event(self, worker: WorkerHandle, event: Event) -> None:
        assert self._listener is not None
        if isinstance(event, ExecutionStart):
            worker.running = event.prompt_id
        elif isinstance(event, Executing):
            worker.node = (event.node_id, event.class_type)
        self._listener.on_event(worker.ref, event)

    def _on_exit(self, worker: WorkerHandle, process: Any, exitcode: int | None, failure: str) -> None:
        if worker.process is not process or worker.state == "stopped":
            return
        assert self._listener is not None and self._loop is not None
        lost, node = list(worker.inflight), worker.node
        worker.state = "dead"
        worker.inflight, worker.long, worker.running, worker.node = [], set(), None, None
        reason = exit_reason(worker.device, exitcode, failure)
        log.error("%s", reason)
        if lost:
            # The first held prompt is the one the process was working on; the others never started.
            where = f" while running node {node[0]} ({node[1]})" if node else ""
            died = RunFailure("worker_died", "WorkerDied", reason + where, node_id=node[0] if node else None,
                              node_type=node[1] if node else None)
            self._listener.on_finished(worker.ref, lost[0], died)
            if lost[1:]:
                self._listener.on_returned(lost[1:])
        if self._closing:
            return
        worker.restarts += 1
        worker.failures_in_a_row += 1
        delay = 0.0 if worker.failures_in_a_row <= 1 else min(2.0 ** worker.failures_in_a_row, 30.0)
        self._loop.call_later(delay, self._respawn, worker, process)

    def _respawn(self, worker: WorkerHandle, process: Any) -> None:
        if worker.process is process and not self._closing:
            self._spawn(worker)

    # -- commands ----------------------------------------------------------------------------

    def submit(self, job: Job) -> bool:
        index = placement.choose([w.slot() for w in self.workers], models=job.models,
                                 long_running=job.long_running, prefetch=PREFETCH)
        if index is None:
            return False
        worker = self.workers[index]
        if not worker.send(Run(job)):
            return False
        worker.take(job)
        return True

    def has_capacity(self) -> bool:
        size = len(self.workers)
        return any(placement.free_slots(w.slot(), prefetch=PREFETCH, pool_size=size) > 0 for w in self.workers)

    def cancel(self, prompt_id: str) -> bool:
        worker = next((w for w in self.workers if prompt_id in w.inflight), None)
        return worker is not None and worker.send(Cancel(prompt_id))

    def interrupt(self, prompt_id: str | None) -> list[str]:
        hit = []
        for worker in self.workers:
            if worker.running and (prompt_id is None or worker.running == prompt_id):
                # "Whatever runs" goes to the worker as such: while the prompt we know of has its
                # files written, the worker may already run the next one, which is then stopped.
                if worker.send(Interrupt(None if prompt_id is None else worker.running)):
                    hit.append(worker.running)
        return hit

    def free(self) -> None:
        for worker in self.workers:
            worker.send(Free())
            worker.models.clear()

    def stats(self) -> list[dict[str, Any]]:
        return [w.describe() for w in self.workers]

    async def schemas(self, timeout: float = 30.0) -> NodeSchemas | None:
        """Fresh schemas from a ready worker (its control thread answers even mid-prompt)."""
        assert self._loop is not None
        ready = [w for w in self.workers if w.state == "ready"]
        if not ready:
            return None
        self._next_request += 1
        request = self._next_request
        waiter: asyncio.Future[NodeSchemas] = self._loop.create_future()
        self._schema_waiters[request] = waiter
        if not ready[0].send(SchemasRequest(request)):
            self._schema_waiters.pop(request, None)
            return None
        try:
            return await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            self._schema_waiters.pop(request, None)
            return None


def worker_config(settings: ServerSettings, device: str) -> WorkerConfig:
    """How the local pool starts the worker of ``device``: the server's folders and plugins, and
    its share of the machine's cores: one for the thread writing output files, the rest (at least
    one) for torch."""
    share = max(1, _cores() // len(settings.devices))
    return WorkerConfig(device=device, folders=settings.folders, plugin_dirs=tuple(settings.plugin_dirs),
                        builtin_plugins=settings.builtin_plugins, cache_entries=settings.cache_entries,
                        cache_policy=settings.cache_policy, cache_max_bytes=settings.cache_max_bytes,
                        cache_when_idle=settings.cache_when_idle,
                        model_settings=dict(settings.model_settings),
                        threads=max(1, share - WRITE_THREADS), write_threads=WRITE_THREADS)


def local_pool(settings: ServerSettings) -> LocalWorkerPool:
    """The pool of one worker process per device of ``settings``."""
    return LocalWorkerPool(settings.devices, lambda device: worker_config(settings, device))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
