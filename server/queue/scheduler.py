"""Ties the queue store, an execution pool and the websocket hub together: submission, dispatch in
queue order, event fan-out, completion (history, webhooks, blocking waiters), cancel, interrupt.

The scheduler depends on the pool only through ``ExecutionPool``; it listens to it as its
``PoolListener``. Everything here runs on the event-loop thread, except reading and validating a
submission (``_check``), which touches no scheduling state.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from graph_runtime.events import Event, ExecutionStart
from graph_runtime.input_limits import InputLimits, quote
from graph_runtime.validation import ValidationResult
from server.execution.executors import execution_pool
from server.execution.messages import Job, NodeSchemas
from server.execution.outcome import RunFailure, RunOutcome, RunResult
from server.execution.pool import ExecutionPool, WorkerRef
from server.queue.catalog import SchemaCatalog
from server.queue.records import PromptRecord
from server.queue.store import IN_HISTORY, QueueItem, QueueStore
from server.queue.submission import Submission, SubmissionError, read_submission, refuse
from server.queue.webhooks import Webhooks
from server.settings import ServerSettings
from server.wire.hub import Hub
from server.wire.protocol import message, status_message
from server.wire.relay import relay

log = logging.getLogger(__name__)

__all__ = ["Scheduler", "Submitted", "SubmissionError"]


@dataclass
class Submitted:
    prompt_id: str
    number: int | float
    node_errors: dict[str, Any]


class Scheduler:
    """``pool``: where prompts run (default: ``settings.executor``'s, see ``execution_pool``)."""

    def __init__(self, settings: ServerSettings, pool: ExecutionPool | None = None) -> None:
        self.settings = settings
        self.store = QueueStore(settings.db_path)  # type: ignore[arg-type]
        self.hub = Hub(queue_size=settings.client_send_queue)
        assert settings.user_dir is not None
        self.catalog = SchemaCatalog(settings.folders, settings.user_dir / ".cache" / "object_info.json")
        self.pool = pool if pool is not None else execution_pool(settings)
        self.schemas_ready = asyncio.Event()
        # Set when a worker has reported Ready: imports done and warmed up, so it runs a prompt now.
        self.worker_ready = asyncio.Event()
        self.webhooks = Webhooks(timeout=settings.webhook_timeout)
        # Pending prompts not yet handed to the pool, in queue order: (number, prompt_id).
        self.pending: list[tuple[float, str]] = []
        # One record per prompt queued and not finished (pending, handed to the pool, or running).
        self.records: dict[str, PromptRecord] = {}
        self.limits = InputLimits(settings.max_identifier_chars, settings.max_string_chars, settings.max_nodes)
        # Submissions are read and validated here; two at a time, so a burst of large prompts
        # cannot take every thread of the loop's default executor.
        self._validator = ThreadPoolExecutor(max_workers=2, thread_name_prefix="validate")

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self.catalog.load_cached():
            self.schemas_ready.set()
        requeued, failed = self.store.recover(self.settings.max_attempts)
        if requeued or failed:
            log.warning("restart: %d prompt(s) re-queued, %d failed after too many attempts",
                        len(requeued), len(failed))
        for item in self.store.by_status("pending"):
            self._enqueue(item)
        await self.pool.start(self)

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until a worker is ready (warm), at most ``timeout`` seconds; whether one is."""
        try:
            await asyncio.wait_for(self.worker_ready.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        await self.hub.close_all()
        await self.pool.stop()
        self.webhooks.cancel_all()
        self._validator.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    def _enqueue(self, item: QueueItem) -> None:
        bisect.insort(self.pending, (item.number, item.prompt_id))
        self.records[item.prompt_id] = PromptRecord.of(item)

    # -- submission --------------------------------------------------------------------------

    async def submit(self, body: dict[str, Any]) -> Submitted:
        """POST /prompt's body (see ``read_submission``); raises SubmissionError."""
        if not self.schemas_ready.is_set():
            try:
                await asyncio.wait_for(self.schemas_ready.wait(), self.settings.worker_start_timeout)
            except asyncio.TimeoutError:
                raise refuse("no worker has started yet", kind="server_starting", status=503) from None
        loop = asyncio.get_running_loop()
        # Off the event loop: a large prompt takes a while to read and validate, and other
        # requests and the websockets keep being answered meanwhile.
        sub, result, refused, report = await loop.run_in_executor(self._validator, self._check, body)
        if any(e.type == "value_not_in_list" for e in (refused or result).node_errors):
            # Choices may have changed since the schemas were taken (an uploaded image): refresh once.
            await self.refresh_schemas()
            sub, result, refused, report = await loop.run_in_executor(self._validator, self._check, body)
        if not result.ok:
            raise SubmissionError(report)
        prompt_id = sub.prompt_id or str(uuid.uuid4())
        if self.store.get(prompt_id) is not None:
            raise refuse("prompt_id must be a new, unique string")
        item = self.store.add(prompt_id, sub.prompt, sub.extra_data, result.outputs, client_id=sub.client_id,
                              front=sub.front, number=sub.number)
        self._enqueue(item)
        self.broadcast_status()
        self.dispatch()
        return Submitted(prompt_id, item.comfy_number, report)

    def _check(self, body: dict[str, Any]) -> tuple[Submission, ValidationResult, ValidationResult | None,
                                                    dict[str, Any]]:
        """Read and validate a submission (on a validator thread): the submission, the result to
        queue (or refuse, when not ok), the whole prompt's result when only some of its outputs are
        valid (as ComfyUI, those run and the others are reported in node_errors), and the body to
        answer with: ComfyUI's error body when refused, else the node_errors of the outputs left
        out. The bodies are built here too: for a prompt of thousands of nodes they take a while."""
        sub = read_submission(body, self.catalog.registry, self.catalog.hook_context, self.limits)
        result = self.catalog.validate(sub.prompt, targets=sub.targets, limits=self.limits)
        runnable = result.runnable_outputs() if not result.ok else []
        if not runnable:
            return sub, result, None, result.to_comfy() if not result.ok else {}
        partial = self.catalog.validate(sub.prompt, targets=runnable, limits=self.limits)
        return sub, partial, result, partial.to_comfy() if not partial.ok else result.comfy_node_errors()

    async def refresh_schemas(self) -> None:
        fresh = await self.pool.schemas(timeout=10.0)
        if fresh is not None:
            self.catalog.update(fresh)

    def wait_for(self, prompt_id: str) -> asyncio.Future[QueueItem]:
        """A future resolved with the prompt's item once it has finished (or been cancelled)."""
        future: asyncio.Future[QueueItem] = asyncio.get_running_loop().create_future()
        record = self.records.get(prompt_id)
        item = self.store.get(prompt_id)
        if record is not None:
            record.waiters.append(future)
        elif item is not None:
            future.set_result(item)
        else:
            future.set_exception(KeyError(f"no prompt {prompt_id!r}"))
        return future

    # -- dispatch ----------------------------------------------------------------------------

    def dispatch(self) -> None:
        """Hand pending prompts to the pool in queue order while it has room. A prompt the pool
        cannot place now (a long-running one while the other workers must stay free) keeps its
        place, and the prompts behind it go ahead."""
        kept: list[tuple[float, str]] = []
        for position, entry in enumerate(self.pending):
            if not self.pool.has_capacity():
                kept.extend(self.pending[position:])
                break
            prompt_id = entry[1]
            item = self.store.get(prompt_id)
            if item is None or item.status != "pending" or prompt_id not in self.records:
                continue
            job = Job(prompt_id, item.prompt, item.extra_data, tuple(item.outputs_to_execute),
                      models=self.catalog.models_used(item.prompt), long_running=self.catalog.long_running(item.prompt))
            if not self.pool.submit(job):
                kept.append(entry)
        self.pending = kept

    # -- pool reports (PoolListener) -----------------------------------------------------------

    def on_ready(self, worker: WorkerRef, schemas: NodeSchemas) -> None:
        log.info("worker %s ready (pid %s, %d node types)", worker.device, worker.pid, len(schemas.object_info))
        self.catalog.update(schemas)
        self.schemas_ready.set()
        self.worker_ready.set()
        self.dispatch()

    def on_event(self, worker: WorkerRef, event: Event) -> None:
        record = self.records.get(event.prompt_id)
        if record is None:
            log.debug("event for a prompt no longer tracked: %r", event)
            return
        if isinstance(event, ExecutionStart):
            self.store.mark_running(event.prompt_id, worker.as_dict())
            self.broadcast_status()
        out = record.translator.translate(event, listening=self.hub.listens(record.client_id))
        record.messages += relay(self.hub, record.client_id, event.prompt_id, out)

    def on_finished(self, worker: WorkerRef | None, prompt_id: str, result: RunResult) -> None:
        record = self.records.pop(prompt_id, None)
        if record is not None:
            self._complete(record, result)
        self.dispatch()

    def on_dropped(self, prompt_id: str) -> None:
        record = self.records.pop(prompt_id, None)
        item = self.store.get(prompt_id)
        if record is not None and item is not None and item.status in ("pending", "running"):
            # Interrupted before it started: it ends as interrupted rather than waiting forever.
            self._complete(record, RunOutcome("interrupted"))
        self.dispatch()

    def on_returned(self, prompt_ids: list[str]) -> None:
        for prompt_id in prompt_ids:
            record = self.records.get(prompt_id)
            item = self.store.get(prompt_id)
            if record is None or item is None or item.status not in ("pending", "running"):
                continue
            self.store.mark_pending(prompt_id)
            record.restart()
            bisect.insort(self.pending, (record.number, prompt_id))
        self.dispatch()

    def _complete(self, record: PromptRecord, result: RunResult) -> None:
        prompt_id, client_id = record.prompt_id, record.client_id
        if isinstance(result, RunFailure) and not result.sent_as_event:
            # Failed outside any node (worker validation, a runtime error, a dead worker):
            # clients still get ComfyUI's execution_error.
            data = result.execution_error(prompt_id)
            record.messages.append(["execution_error", data])
            self.hub.send(client_id, message("execution_error", data))
        item = self.store.get(prompt_id)
        if item is not None and item.status != "cancelled":
            self.store.finish(prompt_id, result.status, outputs=result.outputs, messages=record.messages,
                              error=result.as_dict() if isinstance(result, RunFailure) else None)
        # ComfyUI's order: execution_success (sent with the events), the queue status, then
        # ``executing`` null, on which clients take the prompt as done.
        self.broadcast_status()
        self.hub.send(client_id, message("executing", {"node": None, "display_node": None, "prompt_id": prompt_id}))
        finished = self.store.get(prompt_id)
        if finished is not None:
            record.resolve(finished)
            self.webhooks.notify(finished)

    # -- queue control -----------------------------------------------------------------------

    def queue_view(self) -> dict[str, Any]:
        """GET /queue: running first, then pending, each as ComfyUI's queue entry list."""
        return {"queue_running": [i.queue_entry() for i in self.store.by_status("running")],
                "queue_pending": [i.queue_entry() for i in self.store.by_status("pending")]}

    def history_item(self, prompt_id: str) -> dict[str, Any]:
        """GET /history/{id}: as ComfyUI, ``{}`` until the prompt has finished (clients poll
        ``if prompt_id in history``); /jobs/{id} reports a pending or running prompt."""
        item = self.store.get(prompt_id)
        return {prompt_id: item.history_entry()} if item is not None and item.status in IN_HISTORY else {}

    def history_view(self, max_items: int | None, offset: int) -> dict[str, Any]:
        return {i.prompt_id: i.history_entry() for i in self.store.history(max_items=max_items, offset=offset)}

    def queue_remaining(self) -> int:
        return self.store.count("pending", "running")

    def broadcast_status(self) -> None:
        self.hub.send(None, status_message(self.queue_remaining()))

    def cancel(self, prompt_ids: list[str]) -> list[str]:
        """Take pending prompts out of the queue; the ids that were pending."""
        cancelled = self.store.cancel(prompt_ids)
        self._drop_pending(cancelled)
        if cancelled:
            self.broadcast_status()
        return cancelled

    def clear_queue(self) -> list[str]:
        cancelled = self.store.cancel_all_pending()
        self._drop_pending(cancelled)
        self.broadcast_status()
        return cancelled

    def _drop_pending(self, prompt_ids: list[str]) -> None:
        gone = set(prompt_ids)
        self.pending = [entry for entry in self.pending if entry[1] not in gone]
        for prompt_id in gone:
            record = self.records.get(prompt_id)
            item = self.store.get(prompt_id)
            if record is not None and item is not None:
                record.resolve(item)
            # A prompt the pool holds keeps its record until the pool reports it dropped.
            if not self.pool.cancel(prompt_id):
                self.records.pop(prompt_id, None)

    def interrupt(self, prompt_id: str | None) -> list[str]:
        return self.pool.interrupt(prompt_id)

    def interrupt_answer(self, prompt_id: str | None) -> dict[str, Any]:
        """POST /interrupt's answer: ``{"interrupted": [ids]}``, plus ``reason`` (a code) and
        ``message`` when nothing was interrupted, so a client learns why."""
        if hit := self.interrupt(prompt_id):
            return {"interrupted": hit}
        item = self.store.get(prompt_id) if prompt_id is not None else None
        shown = quote(prompt_id or "")  # a long id is echoed by its start, as in validation errors
        if prompt_id is None:
            reason, text = "nothing_running", "no prompt is running"
        elif item is None:
            reason, text = "unknown_prompt", f"no prompt {shown!r} is known"
        elif item.status == "running":  # it ended between the store's word and the pool's
            reason, text = "finished", f"prompt {shown!r} was finishing; nothing left to interrupt"
        elif item.status == "pending":
            reason, text = "queued", (f"prompt {shown!r} is queued and has not started: remove it with "
                                      f'POST /queue {{"delete": ["{prompt_id}"]}}')
        else:
            reason, text = "finished", f"prompt {shown!r} has already finished ({item.status})"
        return {"interrupted": [], "reason": reason, "message": text}

    def free(self) -> None:
        self.pool.free()
