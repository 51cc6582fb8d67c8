"""One local worker process as the pool sees it: its pipe, what it holds, how it is started and
why it ended."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from server.execution.messages import Job, ToWorker, WorkerConfig
from server.execution.placement import Slot
from server.execution.pool import WorkerRef

# Prompts handed to one worker ahead of time, so it never waits for the server between prompts.
PREFETCH = 2
# Model files remembered per worker for affinity.
REMEMBERED_MODELS = 8


@dataclass(eq=False)
class WorkerHandle:
    index: int
    device: str
    process: subprocess.Popen[bytes] | None = None
    conn: Connection | None = None
    state: str = "starting"  # starting | ready | dead | stopped
    # Prompt ids sent to the worker and not yet finished, oldest (the running one) first.
    inflight: list[str] = field(default_factory=list)
    # Those of them whose workflow has a long-running node.
    long: set[str] = field(default_factory=set)
    running: str | None = None
    # The node the running prompt is at, (node id, class type), to name it if the process dies.
    node: tuple[str, str] | None = None
    # Model files this worker was last given (as "folder/name", oldest first), to send it the
    # prompts that reuse them. Bounded: a worker's own model cache forgets old ones too.
    models: dict[str, None] = field(default_factory=dict)
    restarts: int = 0
    started_at: float = 0.0
    # Seconds from spawning the process to its Ready (imports and warm-up done); None until then.
    start_seconds: float | None = None
    failures_in_a_row: int = 0
    # The worker's model manager report after its last prompt (None until a model node ran).
    resources: dict[str, Any] | None = None
    # Its output cache's report after its last prompt or free.
    cache_stats: dict[str, Any] | None = None
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def ref(self) -> WorkerRef:
        return WorkerRef(self.index, self.device, self.pid)

    def slot(self) -> Slot:
        return Slot(self.index, self.state == "ready", len(self.inflight), bool(self.long), frozenset(self.models))

    def send(self, message: ToWorker) -> bool:
        if self.conn is None or self.state not in ("ready", "starting"):
            return False
        try:
            with self.send_lock:
                self.conn.send(message)
            return True
        except (OSError, ValueError):  # the process just died; its reader reports it
            return False

    def take(self, job: Job) -> None:
        self.inflight.append(job.prompt_id)
        if job.long_running:
            self.long.add(job.prompt_id)
        for name in sorted(job.models):
            self.models.pop(name, None)
            self.models[name] = None
        while len(self.models) > REMEMBERED_MODELS:
            del self.models[next(iter(self.models))]

    def forget(self, prompt_id: str) -> None:
        if prompt_id in self.inflight:
            self.inflight.remove(prompt_id)
        self.long.discard(prompt_id)
        if self.running == prompt_id:
            self.running, self.node = None, None

    def mark_ready(self) -> None:
        self.state = "ready"
        self.start_seconds = round(time.monotonic() - self.started_at, 3)

    def describe(self) -> dict[str, Any]:
        return {"index": self.index, "device": self.device, "pid": self.pid, "state": self.state,
                "ready": self.state == "ready", "start_seconds": self.start_seconds,
                "running": self.running, "queued": self.inflight[1:] if self.running else self.inflight,
                "restarts": self.restarts, "models": list(self.models),
                "model_manager": (self.resources or {}).get("model_manager"),
                "resources": self.resources or {}, "cache": self.cache_stats}

    def spawn(self, config: WorkerConfig) -> Connection:
        """Start a fresh process; returns the server's end of its pipe."""
        parent, child = multiprocessing.Pipe(duplex=True)
        process = subprocess.Popen([sys.executable, "-m", "server.execution.worker", str(child.fileno())],
                                   pass_fds=[child.fileno()], env=worker_env(config))
        child.close()
        try:
            parent.send(config)
        except OSError:  # died at once; the reader reports its exit
            pass
        self.process, self.conn, self.state = process, parent, "starting"
        self.inflight, self.long, self.running, self.node, self.models = [], set(), None, None, {}
        self.resources = self.cache_stats = None
        self.started_at, self.start_seconds = time.monotonic(), None
        return parent


def worker_env(config: WorkerConfig) -> dict[str, str]:
    env = dict(os.environ)
    if config.threads is not None:
        # torch sizes its CPU pools from these once, at import.
        env.setdefault("OMP_NUM_THREADS", str(config.threads))
        env.setdefault("MKL_NUM_THREADS", str(config.threads))
    # The worker imports the server package: make it importable however the server was started.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    # Read by glibc at process start: two malloc arenas instead of up to 8 per core keep the
    # worker's heap from growing with every thread torch starts.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    return env


def exit_reason(device: str, exitcode: int | None, failure: str) -> str:
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
