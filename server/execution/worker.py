"""The worker process: one per device, holding its own registry, output cache and loaded models.

It talks to the server over one duplex pipe. The main thread runs prompts one after another; a
control thread reads the pipe so that an interrupt, a cancel or a schema request is answered while
a prompt runs; a write thread encodes and writes output files while the main thread goes on; a
sender thread (the outbox) sends everything, a prompt's ``executed`` and ``Done`` only once its
files are complete. Messages both ways are the typed ones of server.execution.messages.
"""

from __future__ import annotations

import ctypes
import gc
import os
import queue
import sys
import threading
import traceback
from dataclasses import asdict
from multiprocessing.connection import Connection
from typing import Any

from graph_runtime.cache import OutputCache
from graph_runtime.context import InterruptFlag, Services
from graph_runtime.deferred import BACKGROUND_WRITES, BackgroundWrites
from graph_runtime.registry import load_registry
from graph_runtime.schema import model_inputs, object_info
from graph_runtime.validation import WorkflowInvalid
from server.execution.messages import (
    Cancel, Done, Dropped, Failed, Free, Freed, FromWorker, Interrupt, Job, NodeSchemas, Ready, Run, SchemasReply,
    SchemasRequest, Stop, WorkerConfig, WorkerEvent,
)
from server.execution.outbox import Link, Outbox
from server.execution.outcome import RunFailure, RunOutcome, RunResult

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
    """``conn``: the pipe to the server, or a Ray actor's mailbox (anything with ``send`` and
    ``recv``). Everything it sends goes through one ``Outbox``, so a prompt's ``executed`` and
    ``Done`` leave only once the files it wrote are complete."""

    def __init__(self, config: WorkerConfig, conn: Connection | Link) -> None:
        self.config = config
        self.conn = conn
        # Jobs and Free requests in arrival order; None stops the worker.
        self.jobs: queue.Queue[Job | Free | None] = queue.Queue()
        self.cancelled: set[str] = set()
        self.current: str | None = None
        self.interrupt = InterruptFlag()
        self.registry = load_registry(plugin_dirs=list(config.plugin_dirs), builtins=config.builtin_plugins or (),
                                      entry_points=config.builtin_plugins is None)
        self.registry.startup({"device": config.device})
        from graph_runtime.executor import Runtime

        local_device = "cpu" if config.device == "cpu" else "cuda:0"
        cache = OutputCache(policy=config.cache_policy, max_entries=config.cache_entries,
                            max_bytes=config.cache_max_bytes)
        self.runtime = Runtime(self.registry, cache=cache,
                               folders=config.folders,
                               services=Services(device=local_device,
                                                 settings={**config.model_settings, "device": local_device}))
        self.outbox: Outbox | None = None
        self.writes: BackgroundWrites | None = None
        # Set by the sender thread when a background write failed: the run's thread then drops
        # the cached outputs (one may name the file that was never written) before its next prompt.
        self.stale_cache = threading.Event()
        torch = sys.modules.get("torch")
        if torch is not None and config.threads is not None:
            torch.set_num_threads(config.threads)
        # Warm before Ready: the server reports itself ready on this worker's word, and its first
        # prompt must not pay for lazy imports and first calls.
        self.registry.call_each("nodeloom_warmup", services=self.runtime.services)
        # What is loaded now lives as long as the process: keep it out of every later collection.
        gc.collect()
        gc.freeze()

    def send(self, message: FromWorker) -> None:
        assert self.outbox is not None, "send() before run_forever()"
        self.outbox.send(message)

    def _open_outbox(self) -> None:
        self.outbox = Outbox(self.conn, on_write_failed=self.stale_cache.set)
        if self.config.write_threads > 0:
            self.writes = BackgroundWrites(threads=self.config.write_threads, on_submit=self.outbox.wait_for)
            self.runtime.services.set(BACKGROUND_WRITES, self.writes)

    def _close_outbox(self) -> None:
        """Finish the writes in progress and send what is queued (a stopped worker loses no file)."""
        if self.writes is not None:
            self.writes.close()
        if self.outbox is not None:
            self.outbox.close(timeout=60)

    def schemas(self) -> NodeSchemas:
        return NodeSchemas(object_info(self.registry, self.runtime.hook_context), model_inputs(self.registry),
                           tuple(p.as_dict() for p in self.registry.plugins))

    # -- control thread ----------------------------------------------------------------------

    def control_loop(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                os._exit(0)  # the server is gone: never linger as an orphan
            match message:
                case Run(job=job):
                    self.jobs.put(job)
                case Cancel(prompt_id=prompt_id):
                    self.cancelled.add(prompt_id)
                    if prompt_id == self.current:
                        self.interrupt.set()
                case Interrupt(prompt_id=prompt_id):
                    if prompt_id is None or prompt_id == self.current:
                        self.interrupt.set()
                    else:  # it has not started yet: it never will
                        self.cancelled.add(prompt_id)
                case SchemasRequest(request_id=request_id):
                    self.send(SchemasReply(request_id, self.schemas()))
                case Free():
                    # Through the job queue: an idle main thread wakes for it at once; a busy
                    # one frees once the prompts it already holds are done.
                    self.jobs.put(message)
                case Stop():
                    self.jobs.put(None)
                    return

    # -- main thread -------------------------------------------------------------------------

    def run_forever(self) -> None:
        self._open_outbox()
        self.send(Ready(self.schemas()))
        threading.Thread(target=self.control_loop, name="worker-control", daemon=True).start()
        try:
            self._serve()
        finally:
            self._close_outbox()

    def _serve(self) -> None:
        tidy = False
        while True:
            try:
                job = self.jobs.get(timeout=IDLE_TIDY_SECONDS if tidy else None)
            except queue.Empty:
                if self.config.cache_when_idle == "last-prompt" and self.runtime.cache.keep_last_run():
                    self.send(Freed(self.resources(), self.cache_stats()))  # /system_stats shows the drop
                _release_memory()
                tidy = False
                continue
            if job is None:
                return
            if self.stale_cache.is_set():
                self.stale_cache.clear()
                self.runtime.cache.clear()
            tidy = True
            if isinstance(job, Free):
                self.free()
                continue
            if job.prompt_id in self.cancelled:
                self.cancelled.discard(job.prompt_id)
                self.send(Dropped(job.prompt_id))
                continue
            self.execute(job)

    def execute(self, job: Job) -> None:
        self.current = job.prompt_id
        self.interrupt.clear()
        listener = lambda event: self.send(WorkerEvent(event))  # noqa: E731
        result: RunResult
        try:
            run = self.runtime.execute(job.prompt, prompt_id=job.prompt_id, extra_data=job.extra_data,
                                       targets=list(job.outputs_to_execute) or None,
                                       listeners=[listener], interrupt=self.interrupt)
            if run.status == "error":
                assert run.error is not None, "a failed run carries its ExecutionError"
                result = RunFailure.of_node(run.error, run.outputs)
            else:
                result = RunOutcome(run.status, run.outputs)
        except WorkflowInvalid as invalid:
            result = RunFailure.of_invalid(invalid)
        except Exception as exc:  # noqa: BLE001 - a runtime bug fails the prompt, not the worker
            result = RunFailure.of_exception(exc)
        self.current = None
        self.send(Done(job.prompt_id, result, self.resources(), self.cache_stats()))

    def resources(self) -> dict[str, Any]:
        """What the plugins' long-lived resources hold, by name (the diffusion pack's
        ``model_manager`` report, a plugin's own); a plugin whose hook fails is left out."""
        return self.runtime.resource_stats()

    def cache_stats(self) -> dict[str, Any]:
        cache = self.runtime.cache
        return {"policy": cache.policy, "max_entries": cache.max_entries, "max_bytes": cache.max_bytes,
                **asdict(cache.stats())}

    def free(self) -> None:
        self.runtime.free(unload_models=True, free_memory=True)
        self.send(Freed(self.resources(), self.cache_stats()))
        _release_memory()  # after the report: returning pages to the OS can take a while


def worker_main(config: WorkerConfig, conn: Connection) -> None:
    """Run a worker on ``conn`` (a fresh interpreter: nothing of the server is inherited)."""
    _pin_device(config.device)
    try:
        worker = _Worker(config, conn)
    except BaseException as exc:  # noqa: BLE001 - report why we could not start, then exit
        conn.send(Failed("".join(traceback.format_exception(exc))))
        raise SystemExit(3) from exc
    worker.run_forever()


def main(argv: list[str]) -> None:
    """``python -m server.execution.worker FD``: FD is the worker's end of the pipe; the server sends the
    WorkerConfig as the first message."""
    conn = Connection(int(argv[0]))
    worker_main(conn.recv(), conn)


if __name__ == "__main__":
    main(sys.argv[1:])
