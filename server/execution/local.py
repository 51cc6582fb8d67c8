"""The server's side of the worker processes: start, feed, watch, restart.

One process per device: a fresh ``python -m server.execution.worker`` (it inherits nothing of the server and
imports torch only if its node packs do; started with subprocess rather than multiprocessing's
spawn, which would add a resource-tracker process and re-import the server's main module). A reader thread per worker turns what the pipe delivers into calls on the event
loop, so every piece of scheduling state is touched by one thread only. A worker that dies —
segfault, OOM kill, kill -9 — is noticed by its pipe closing; the pool reports the prompts it held
and starts a fresh one.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from graph_runtime.events import ExecutionStart
from server.execution.worker import Job, WorkerConfig

log = logging.getLogger(__name__)

# Prompts handed to one worker ahead of time, so it never waits for the server between prompts.
PREFETCH = 2
# Model files remembered per worker for affinity.
REMEMBERED_MODELS = 8


class PoolListener(Protocol):
    def worker_ready(self, worker: WorkerHandle, schemas: dict[str, Any]) -> None: ...
    def worker_event(self, worker: WorkerHandle, event: Any) -> None: ...
    def worker_done(self, worker: WorkerHandle, prompt_id: str, summary: dict[str, Any]) -> None: ...
    def worker_dropped(self, worker: WorkerHandle, prompt_id: str) -> None: ...
    def worker_died(self, worker: WorkerHandle, reason: str, lost: list[str]) -> None: ...


@dataclass(eq=False)
class WorkerHandle:
    index: int
    device: str
    process: subprocess.Popen[bytes] | None = None
    conn: Connection | None = None
    state: str = "starting"  # starting | ready | dead | stopped
    # Prompt ids sent to the worker and not yet finished, oldest (the running one) first.
    inflight: list[str] = field(default_factory=list)
    running: str | None = None
    # Model files this worker was last given (as "folder/name", oldest first), to send it the
    # prompts that reuse them. Bounded: a worker's own model cache forgets old ones too.
    models: dict[str, None] = field(default_factory=dict)
    restarts: int = 0
    started_at: float = 0.0
    failures_in_a_row: int = 0
    # The worker's model manager report after its last prompt (None until a model node ran).
    model_stats: dict[str, Any] | None = None
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def free_slots(self) -> int:
        return PREFETCH - len(self.inflight) if self.state == "ready" else 0

    def send(self, message: tuple[Any, ...]) -> bool:
        if self.conn is None or self.state not in ("ready", "starting"):
            return False
        try:
            with self.send_lock:
                self.conn.send(message)
            return True
        except (OSError, ValueError):  # the process just died; its reader reports it
            return False

    def remember_models(self, used: set[str]) -> None:
        for name in sorted(used):
            self.models.pop(name, None)
            self.models[name] = None
        while len(self.models) > REMEMBERED_MODELS:
            del self.models[next(iter(self.models))]

    def describe(self) -> dict[str, Any]:
        return {"index": self.index, "device": self.device, "pid": self.pid, "state": self.state,
                "running": self.running, "queued": self.inflight[1:] if self.running else self.inflight,
                "restarts": self.restarts, "models": list(self.models),
                "model_manager": self.model_stats}


class WorkerPool:
    def __init__(self, devices: list[str], make_config: Callable[[str], WorkerConfig],
                 listener: PoolListener) -> None:
        self.workers = [WorkerHandle(index=i, device=d) for i, d in enumerate(devices)]
        self._make_config = make_config
        self._listener = listener
        self._loop: asyncio.AbstractEventLoop | None = None
        self._schema_waiters: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_request = 0
        self._closing = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for worker in self.workers:
            self._spawn(worker)

    def _spawn(self, worker: WorkerHandle) -> None:
        config = self._make_config(worker.device)
        parent, child = multiprocessing.Pipe(duplex=True)
        process = subprocess.Popen([sys.executable, "-m", "server.execution.worker", str(child.fileno())],
                                   pass_fds=[child.fileno()], env=_worker_env(config))
        child.close()
        try:
            parent.send(config)
        except OSError:  # died at once; the reader below reports its exit
            pass
        worker.process, worker.conn, worker.state = process, parent, "starting"
        worker.inflight, worker.running, worker.models = [], None, {}
        worker.started_at = time.monotonic()
        threading.Thread(target=self._read, args=(worker, parent, process), daemon=True,
                         name=f"worker-reader-{worker.index}").start()

    def _read(self, worker: WorkerHandle, conn: Connection, process: Any) -> None:
        assert self._loop is not None
        call = self._loop.call_soon_threadsafe
        failure = ""
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            except Exception as exc:  # noqa: BLE001 - an unpicklable message must not stop reading
                log.exception("bad message from worker %s", worker.device)
                failure = f"unreadable message: {exc}"
                continue
            if message[0] == "failed":
                failure = message[1]
                continue
            try:
                call(self._dispatch, worker, process, message)
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

    def _dispatch(self, worker: WorkerHandle, process: Any, message: tuple[Any, ...]) -> None:
        if worker.process is not process or self._closing:
            return  # a message from a worker we already replaced, or while shutting down
        op = message[0]
        if op == "ready":
            worker.state = "ready"
            worker.failures_in_a_row = 0
            self._listener.worker_ready(worker, message[1])
        elif op == "event":
            if isinstance(message[1], ExecutionStart):
                worker.running = message[1].prompt_id
            self._listener.worker_event(worker, message[1])
        elif op == "done":
            self._forget(worker, message[1])
            self._listener.worker_done(worker, message[1], message[2])
        elif op == "dropped":
            self._forget(worker, message[1])
            self._listener.worker_dropped(worker, message[1])
        elif op == "schemas":
            waiter = self._schema_waiters.pop(message[1], None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message[2])

    def _forget(self, worker: WorkerHandle, prompt_id: str) -> None:
        if prompt_id in worker.inflight:
            worker.inflight.remove(prompt_id)
        if worker.running == prompt_id:
            worker.running = None

    def _on_exit(self, worker: WorkerHandle, process: Any, exitcode: int | None, failure: str) -> None:
        if worker.process is not process or worker.state == "stopped":
            return
        lost = list(worker.inflight)
        worker.state = "dead"
        reason = _exit_reason(worker.device, exitcode, failure)
        log.error("%s", reason)
        self._listener.worker_died(worker, reason, lost)
        if self._closing:
            return
        worker.restarts += 1
        worker.failures_in_a_row += 1
        delay = 0.0 if worker.failures_in_a_row <= 1 else min(2.0 ** worker.failures_in_a_row, 30.0)
        assert self._loop is not None
        self._loop.call_later(delay, self._respawn, worker, process)

    def _respawn(self, worker: WorkerHandle, process: Any) -> None:
        if worker.process is process and not self._closing:
            self._spawn(worker)

    # -- commands ----------------------------------------------------------------------------

    def submit(self, worker: WorkerHandle, job: Job) -> bool:
        if worker.free_slots <= 0 or not worker.send(("run", job)):
            return False
        worker.inflight.append(job.prompt_id)
        return True

    def holder_of(self, prompt_id: str) -> WorkerHandle | None:
        return next((w for w in self.workers if prompt_id in w.inflight), None)

    def cancel(self, prompt_id: str) -> bool:
        worker = self.holder_of(prompt_id)
        return worker is not None and worker.send(("cancel", prompt_id))

    def interrupt(self, prompt_id: str | None) -> list[str]:
        """Interrupt ``prompt_id`` where it runs, or every running prompt. Returns those hit."""
        hit = []
        for worker in self.workers:
            if worker.running and (prompt_id is None or worker.running == prompt_id):
                if worker.send(("interrupt", worker.running)):
                    hit.append(worker.running)
        return hit

    def free(self) -> None:
        for worker in self.workers:
            worker.send(("free",))
            worker.models.clear()

    async def schemas(self, timeout: float = 30.0) -> dict[str, Any] | None:
        """Fresh schemas from a ready worker (the control thread answers even mid-prompt)."""
        assert self._loop is not None
        ready = [w for w in self.workers if w.state == "ready"]
        if not ready:
            return None
        self._next_request += 1
        request = self._next_request
        waiter: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._schema_waiters[request] = waiter
        if not ready[0].send(("schemas", request)):
            self._schema_waiters.pop(request, None)
            return None
        try:
            return await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            self._schema_waiters.pop(request, None)
            return None

    def stop(self, timeout: float = 5.0) -> None:
        self._closing = True
        for worker in self.workers:
            worker.send(("stop",))
            worker.state = "stopped"
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


def _worker_env(config: WorkerConfig) -> dict[str, str]:
    env = dict(os.environ)
    if config.threads is not None:
        # torch sizes its CPU pools from these once, at import.
        env.setdefault("OMP_NUM_THREADS", str(config.threads))
        env.setdefault("MKL_NUM_THREADS", str(config.threads))
    # The worker imports the server package: make it importable however the server was started.
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    # Read by glibc at process start: two malloc arenas instead of up to 8 per core keep the
    # worker's heap from growing with every thread torch starts.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    return env


def _exit_reason(device: str, exitcode: int | None, failure: str) -> str:
    if failure:
        return f"worker process for {device} failed: {failure.strip().splitlines()[-1]}"
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (killed: out of memory, or kill -9)" if name == "SIGKILL" else ""
        return f"worker process for {device} died from {name}{hint}"
    return f"worker process for {device} exited with code {exitcode}"
