"""The worker process: one per device, holding its own registry, output cache and loaded models.

It talks to the server over one duplex pipe. The main thread runs prompts one after another; a
control thread reads the pipe so that an interrupt, a cancel or a schema request is answered while
a prompt runs. Events go back as graph_runtime event objects; the server translates them.
"""

from __future__ import annotations

import ctypes
import gc
import os
import queue
import sys
import threading
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from graph_runtime.cache import OutputCache
from graph_runtime.context import InterruptFlag, Services
from graph_runtime.events import Event
from graph_runtime.folders import FolderPaths, configure
from graph_runtime.registry import load_registry
from graph_runtime.schema import model_inputs, object_info
from graph_runtime.validation import WorkflowInvalid


@dataclass
class WorkerConfig:
    device: str
    folders: FolderPaths
    plugin_dirs: list[Path] = field(default_factory=list)
    builtin_plugins: tuple[str, ...] = ("nodes.core", "nodes.diffusion")
    cache_entries: int = 256
    # CPU threads for torch's pools: the machine's cores shared among the workers, so that two
    # CPU workers do not each start a pool as large as the machine.
    threads: int | None = None
    # Model manager options (ram_budget, vram_budget, channels_last, compile), read by the nodes.
    model_settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: list[str]


# Seconds without work after which the worker returns freed memory to the OS.
IDLE_TIDY_SECONDS = 0.5


def _pin_device(device: str) -> None:
    """Give the process only its own GPU (it then appears as cuda:0), before torch is imported."""
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif device.startswith("cuda:"):
        os.environ["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]


def _release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc keeps them otherwise)."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class _Worker:
    def __init__(self, config: WorkerConfig, conn: Connection) -> None:
        self.config = config
        self.conn = conn
        self.send_lock = threading.Lock()
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.cancelled: set[str] = set()
        self.current: str | None = None
        self.interrupt = InterruptFlag()
        self.free_requested = threading.Event()
        configure(config.folders)
        self.registry = load_registry(plugin_dirs=config.plugin_dirs, builtins=config.builtin_plugins)
        self.registry.startup({"device": config.device})
        from graph_runtime.executor import Runtime

        local_device = "cpu" if config.device == "cpu" else "cuda:0"
        self.runtime = Runtime(self.registry, cache=OutputCache(max_entries=config.cache_entries),
                               folders=config.folders,
                               services=Services(device=local_device,
                                                 settings={**config.model_settings, "device": local_device}))
        torch = sys.modules.get("torch")
        if torch is not None and config.threads is not None:
            torch.set_num_threads(config.threads)
        # What is loaded now lives as long as the process: keep it out of every later collection.
        gc.collect()
        gc.freeze()

    def send(self, message: tuple[Any, ...]) -> None:
        with self.send_lock:
            self.conn.send(message)

    def schemas(self) -> dict[str, Any]:
        return {"object_info": object_info(self.registry), "model_inputs": model_inputs(self.registry),
                "plugins": [p.as_dict() for p in self.registry.plugins], "pid": os.getpid()}

    # -- control thread ----------------------------------------------------------------------

    def control_loop(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                os._exit(0)  # the server is gone: never linger as an orphan
            op = message[0]
            if op == "run":
                self.jobs.put(message[1])
            elif op == "cancel":
                self.cancelled.add(message[1])
                if message[1] == self.current:
                    self.interrupt.set()
            elif op == "interrupt":
                if message[1] is None or message[1] == self.current:
                    self.interrupt.set()
                elif message[1] is not None:
                    self.cancelled.add(message[1])
            elif op == "schemas":
                self.send(("schemas", message[1], self.schemas()))
            elif op == "free":
                self.free_requested.set()
            elif op == "stop":
                self.jobs.put(None)
                return

    # -- main thread -------------------------------------------------------------------------

    def run_forever(self) -> None:
        self.send(("ready", self.schemas()))
        threading.Thread(target=self.control_loop, name="worker-control", daemon=True).start()
        tidy = False
        while True:
            try:
                job = self.jobs.get(timeout=IDLE_TIDY_SECONDS if tidy else None)
            except queue.Empty:
                _release_memory()
                tidy = False
                continue
            if job is None:
                return
            tidy = True
            if self.free_requested.is_set():
                self.free()
            if job.prompt_id in self.cancelled:
                self.cancelled.discard(job.prompt_id)
                self.send(("dropped", job.prompt_id))
                continue
            self.execute(job)
            if self.free_requested.is_set() and self.jobs.empty():
                self.free()

    def execute(self, job: Job) -> None:
        self.current = job.prompt_id
        self.interrupt.clear()
        listener = lambda event: self.send(("event", event))  # noqa: E731
        try:
            result = self.runtime.execute(job.prompt, prompt_id=job.prompt_id, extra_data=job.extra_data,
                                          targets=job.outputs_to_execute or None,
                                          listeners=[listener], interrupt=self.interrupt)
            summary = {"status": result.status, "outputs": result.outputs,
                       "error": _event_dict(result.error) if result.error else None}
        except WorkflowInvalid as invalid:
            summary = {"status": "error", "outputs": {},
                       "error": {"type": "validation", "exception_type": "WorkflowInvalid",
                                 "exception_message": invalid.result.format(),
                                 "validation": invalid.result.to_comfy()}}
        except Exception as exc:  # noqa: BLE001 - a runtime bug fails the prompt, not the worker
            summary = {"status": "error", "outputs": {},
                       "error": {"type": "internal", "exception_type": type(exc).__name__,
                                 "exception_message": str(exc),
                                 "traceback": traceback.format_exception(exc)}}
        self.current = None
        summary["models"] = self.model_stats()
        self.send(("done", job.prompt_id, summary))

    def model_stats(self) -> dict[str, Any] | None:
        """What the plugins' long-lived resources hold (the model manager's report, say)."""
        merged: dict[str, Any] = {}
        for part in self.registry.hook.nodeloom_resource_stats(services=self.runtime.services):
            merged.update(part or {})
        return merged.get("model_manager")

    def free(self) -> None:
        self.free_requested.clear()
        self.runtime.cache.clear()
        self.registry.hook.nodeloom_free_resources(services=self.runtime.services,
                                                   unload_models=True, free_memory=True)
        gc.collect()


def _event_dict(event: Event) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(event)


def worker_main(config: WorkerConfig, conn: Connection) -> None:
    """Run a worker on ``conn`` (a fresh interpreter: nothing of the server is inherited)."""
    _pin_device(config.device)
    try:
        worker = _Worker(config, conn)
    except BaseException as exc:  # noqa: BLE001 - report why we could not start, then exit
        conn.send(("failed", "".join(traceback.format_exception(exc))))
        raise SystemExit(3) from exc
    worker.run_forever()


def main(argv: list[str]) -> None:
    """``python -m server.execution.worker FD``: FD is the worker's end of the pipe; the server sends the
    WorkerConfig as the first message."""
    conn = Connection(int(argv[0]))
    worker_main(conn.recv(), conn)


if __name__ == "__main__":
    main(sys.argv[1:])
