"""``nodeloom batch`` on an ``ExecutionPool``: the batch's jobs fed to the pool's workers as the
server's queue feeds them (placement prefers a worker holding the job's models), one manifest
record per job, a job whose worker died run again on another (bounded), Ctrl-C interrupting the
running ones. ``ray_batch`` is the ``--executor ray`` factory the server plugin registers.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from graph_runtime.batch import BatchJob
from graph_runtime.context import InterruptFlag
from graph_runtime.events import Event, ExecutionStart
from graph_runtime.headless import Env, plugin_dirs_of
from server.execution.messages import Job, NodeSchemas, WorkerConfig
from server.execution.outcome import RunFailure, RunResult
from server.execution.pool import ExecutionPool, WorkerRef
from server.execution.publish import is_url, join

# How often the driver looks at the Ctrl-C flag, in seconds.
INTERRUPT_POLL_SECONDS = 0.2

Locate = Callable[[dict[str, Any]], str | None]
Report = Callable[[dict[str, Any]], None]
# Why the pool's workers cannot start at all (None while they can).
StartFailure = Callable[[], str | None]


class WorkersCannotStart(ValueError):
    """No worker of the pool could start: the batch cannot run."""


@dataclass
class _Attempt:
    job: BatchJob
    tries: int = 1
    submitted: float = 0.0
    started: float | None = None


class PoolBatch:
    """A ``graph_runtime.batch.BatchExecutor`` over ``pool``. ``retries``: how many more times a
    job whose worker died is run (then it is recorded as an error naming the worker);
    ``locate(ui_entry)``: the path or URL a reported output file ends up at (None: not listed);
    ``start_failure()``: why the pool's workers cannot start, checked as the batch waits (a pool
    restarts a worker that fails to start, so without it such a batch would wait forever)."""

    def __init__(self, pool: ExecutionPool, *, retries: int, locate: Locate,
                 start_failure: StartFailure = lambda: None) -> None:
        assert retries >= 0, "retries must be >= 0"
        self.pool, self.retries, self.locate = pool, retries, locate
        self.start_failure = start_failure
        self.retried = 0
        self._queue: deque[_Attempt] = deque()
        self._running: dict[str, _Attempt] = {}
        self._report: Report = lambda record: None
        self._stopping = False
        self._done: asyncio.Event | None = None

    def run(self, jobs: list[BatchJob], interrupt: InterruptFlag, report: Report) -> None:
        if jobs:
            asyncio.run(self._run(jobs, interrupt, report))

    async def _run(self, jobs: list[BatchJob], interrupt: InterruptFlag, report: Report) -> None:
        self._queue = deque(_Attempt(job) for job in jobs)
        self._report, self._done = report, asyncio.Event()
        await self.pool.start(self)
        try:
            while not self._done.is_set():
                try:
                    await asyncio.wait_for(self._done.wait(), INTERRUPT_POLL_SECONDS)
                except asyncio.TimeoutError:
                    pass
                if interrupt.is_set() and not self._stopping:
                    self._interrupt()
                if (reason := self.start_failure()) is not None:
                    raise WorkersCannotStart(reason)
        finally:
            await self.pool.stop()

    def _interrupt(self) -> None:
        """Run nothing more; interrupt what runs and drop what waits on a worker."""
        self._stopping = True
        self._queue.clear()
        self.pool.interrupt(None)
        for prompt_id in list(self._running):
            self.pool.cancel(prompt_id)
        self._check_done()

    def _dispatch(self) -> None:
        kept: deque[_Attempt] = deque()
        while self._queue and not self._stopping and self.pool.has_capacity():
            attempt = self._queue.popleft()
            prompt_id = uuid.uuid4().hex
            job = Job(prompt_id, attempt.job.prompt, attempt.job.extra_data, models=attempt.job.models)
            if self.pool.submit(job):
                attempt.submitted, attempt.started = time.perf_counter(), None
                self._running[prompt_id] = attempt
            else:
                kept.append(attempt)
        self._queue.extendleft(reversed(kept))
        self._check_done()

    def _check_done(self) -> None:
        if self._done is not None and not self._running and (not self._queue or self._stopping):
            self._done.set()

    # -- PoolListener ------------------------------------------------------------------------

    def on_ready(self, worker: WorkerRef, schemas: NodeSchemas) -> None:
        self._dispatch()

    def on_event(self, worker: WorkerRef, event: Event) -> None:
        attempt = self._running.get(event.prompt_id)
        if attempt is not None and isinstance(event, ExecutionStart):
            attempt.started = time.perf_counter()

    def on_finished(self, worker: WorkerRef | None, prompt_id: str, result: RunResult) -> None:
        attempt = self._running.pop(prompt_id, None)
        if attempt is None:
            return
        died = isinstance(result, RunFailure) and result.kind == "worker_died"
        if died and attempt.tries <= self.retries and not self._stopping:
            attempt.tries += 1
            self.retried += 1
            self._queue.appendleft(attempt)  # next in line, on whichever worker is free
        else:
            self._report(self._record(attempt, result))
        self._dispatch()

    def on_dropped(self, prompt_id: str) -> None:
        attempt = self._running.pop(prompt_id, None)
        if attempt is not None:
            self._report({"item": attempt.job.name, "status": "interrupted", "outputs": [], "error": None,
                          "seconds": 0.0})
        self._dispatch()

    def on_returned(self, prompt_ids: list[str]) -> None:
        returned = [self._running.pop(p) for p in prompt_ids if p in self._running]
        self._queue.extendleft(reversed(returned))  # never started: not an attempt
        self._dispatch()

    # -- records -----------------------------------------------------------------------------

    def _record(self, attempt: _Attempt, result: RunResult) -> dict[str, Any]:
        seconds = time.perf_counter() - (attempt.started or attempt.submitted)
        record: dict[str, Any] = {"item": attempt.job.name, "status": result.status,
                                  "outputs": self._outputs(result), "error": None, "seconds": round(seconds, 3)}
        if isinstance(result, RunFailure):
            if result.kind == "validation":
                record.update(status="invalid", error=result.exception_message)
            elif result.kind == "node":
                record["error"] = (f"node {result.node_id} ({result.node_type}) failed: "
                                   f"{result.exception_type}: {result.exception_message}")
            else:
                tries = f" (after {attempt.tries} attempt(s))" if result.kind == "worker_died" else ""
                record["error"] = f"{result.exception_type}: {result.exception_message}{tries}"
        return record

    def _outputs(self, result: RunResult) -> list[str]:
        found = []
        for ui in result.outputs.values():
            for items in ui.values() if isinstance(ui, dict) else ():
                for item in items if isinstance(items, list) else ():
                    if isinstance(item, dict) and "filename" in item and (where := self.locate(item)):
                        found.append(where)
        return found


def folder_locator(env: Env) -> Locate:
    """Where a worker that writes straight into ``env``'s folders put a file."""
    def locate(item: dict[str, Any]) -> str | None:
        try:
            folder = env.folders.directory_for(str(item.get("type", "output")))
        except ValueError:
            return None
        return str(folder / str(item.get("subfolder", "")) / str(item["filename"]))

    return locate


def worker_config_of(args: argparse.Namespace, env: Env, *, threads: int) -> WorkerConfig:
    """A worker configured as the batch command's own runtime: its folders, plugins, cache and
    the plugins' settings of the parsed options."""
    return WorkerConfig(device="cpu", folders=env.folders, plugin_dirs=tuple(plugin_dirs_of(args.plugins_dir, env.folders.base)),
                        builtin_plugins=None, cache_entries=args.cache_max_entries, cache_policy=args.cache_policy,
                        cache_max_bytes=args.cache_max_bytes, model_settings=env.registry.settings(vars(args)),
                        threads=threads)


def ray_batch(args: argparse.Namespace, env: Env) -> PoolBatch:
    """``nodeloom batch --executor ray``: actors publish each item's saved files to ``--out`` (a
    folder every node can reach, or an fsspec URL). Raises ``ValueError`` when Ray is missing, the
    URL's filesystem is not installed, or ``--workers``/``--retries`` are out of range."""
    from server.execution.ray_pool import ActorShape, RayWorkerPool, import_ray

    import_ray()
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.retries < 0:
        raise ValueError(f"--retries must be 0 or more, got {args.retries}")
    target = args.out if args.out is not None else env.folders.output_dir
    if is_url(target):
        import fsspec

        protocol = target.split("://", 1)[0]
        try:
            fsspec.get_filesystem_class(protocol)
        except (ImportError, ValueError) as exc:
            raise ValueError(f"--out {target}: no fsspec filesystem for {protocol!r}: {exc}") from exc
        if protocol == "memory":  # each actor would write into its own process, lost when it stops
            raise ValueError(f"--out {target}: memory:// lives inside one process; give a folder or a URL "
                             "every node of the cluster can reach")
    else:
        target = str(Path(target).resolve())
    config = worker_config_of(args, env, threads=1)
    pool = RayWorkerPool(lambda device: replace(config, device=device), address=args.address,
                         shape=ActorShape(workers=args.workers), publish_to=target)

    def locate(item: dict[str, Any]) -> str | None:
        if item.get("type") != "output":
            return None  # previews stay in the actor's staging folder
        return join(target, str(item.get("subfolder", "")), str(item["filename"]))

    return PoolBatch(pool, retries=args.retries, locate=locate, start_failure=lambda: pool.start_failure)
