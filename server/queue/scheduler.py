"""Ties the queue store, the worker pool and the websocket hub together: submission, dispatch,
event fan-out, completion (history, webhooks, blocking waiters), cancel and interrupt.

Everything here runs on the event-loop thread; workers reach it through the pool's reader threads
via ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import os
import uuid
from dataclasses import dataclass
from typing import Any

from graph_runtime.events import ExecutionStart
from graph_runtime.formats import WorkflowFormatError, parse_workflow
from graph_runtime.validation import validate
from server.wire.hub import Hub
from server.wire.protocol import PromptTranslator, failure_data, message, preview_frame, status_message, text_frame
from server.queue.store import QueueItem, QueueStore
from server.queue.catalog import SchemaCatalog
from server.settings import ServerSettings
from server.queue.webhooks import check_url, post_completion
from server.execution.worker import Job, WorkerConfig
from server.execution.local import WorkerHandle, WorkerPool

log = logging.getLogger(__name__)


class SubmissionError(Exception):
    """A prompt refused at submission: ``body`` is ComfyUI's ``{error, node_errors}``."""

    def __init__(self, body: dict[str, Any], status: int = 400) -> None:
        super().__init__(body.get("error", {}).get("message", "invalid prompt"))
        self.body = body
        self.status = status


def _error(kind: str, text: str, details: str = "") -> dict[str, Any]:
    return {"error": {"type": kind, "message": text, "details": details, "extra_info": {}}, "node_errors": {}}


@dataclass
class Submitted:
    prompt_id: str
    number: int | float
    node_errors: dict[str, Any]


class Scheduler:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.store = QueueStore(settings.db_path)  # type: ignore[arg-type]
        self.hub = Hub(queue_size=settings.client_send_queue)
        assert settings.user_dir is not None
        self.catalog = SchemaCatalog(settings.folders, settings.user_dir / ".cache" / "object_info.json")
        self.pool = WorkerPool(settings.devices, self._worker_config, self)
        self.schemas_ready = asyncio.Event()
        # Pending prompts not yet handed to a worker, in queue order: (number, prompt_id).
        self.pending: list[tuple[float, str]] = []
        self.translators: dict[str, PromptTranslator] = {}
        self.messages: dict[str, list[list[Any]]] = {}
        self.client_of: dict[str, str | None] = {}
        self.models_of: dict[str, set[str]] = {}
        self.waiters: dict[str, list[asyncio.Future[QueueItem]]] = {}
        self.webhook_tasks: set[asyncio.Task[bool]] = set()

    def _worker_config(self, device: str) -> WorkerConfig:
        return WorkerConfig(device=device, folders=self.settings.folders,
                            plugin_dirs=list(self.settings.plugin_dirs),
                            builtin_plugins=tuple(self.settings.builtin_plugins),
                            cache_entries=self.settings.cache_entries,
                            model_settings=dict(self.settings.model_settings),
                            threads=max(1, _cores() // len(self.settings.devices)))

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
        self.pool.start(asyncio.get_running_loop())

    async def stop(self) -> None:
        await self.hub.close_all()
        await asyncio.get_running_loop().run_in_executor(None, self.pool.stop)
        for task in list(self.webhook_tasks):
            task.cancel()
        self.store.close()

    def _enqueue(self, item: QueueItem) -> None:
        bisect.insort(self.pending, (item.number, item.prompt_id))
        self.client_of[item.prompt_id] = item.client_id
        self.models_of[item.prompt_id] = self.catalog.models_used(item.prompt)

    # -- submission --------------------------------------------------------------------------

    async def submit(self, body: dict[str, Any]) -> Submitted:
        """POST /prompt's body: ``{prompt, client_id?, extra_data?, front?, number?, prompt_id?,
        partial_execution_targets?}``; ``prompt`` may also be a UI-format workflow."""
        if not self.schemas_ready.is_set():
            try:
                await asyncio.wait_for(self.schemas_ready.wait(), self.settings.worker_start_timeout)
            except asyncio.TimeoutError:
                raise SubmissionError(_error("server_starting", "no worker has started yet"), 503) from None
        extra = body.get("extra_data") or {}
        if not isinstance(extra, dict):
            raise SubmissionError(_error("invalid_prompt", "extra_data must be an object"))
        document = body.get("prompt")
        try:
            workflow = parse_workflow({"prompt": document} if _is_api(document) else document,
                                      self.catalog.registry)
        except (WorkflowFormatError, ImportError) as exc:
            raise SubmissionError(_error("invalid_prompt", "Cannot read the prompt", str(exc))) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise SubmissionError(_error("invalid_prompt", "Cannot convert the workflow", str(exc))) from None
        extra = {**workflow.extra_data, **extra}
        if "webhook_url" in extra and (problem := check_url(extra["webhook_url"])) is not None:
            raise SubmissionError(_error("invalid_prompt", problem))
        targets = body.get("partial_execution_targets")
        if targets is not None and not (isinstance(targets, list) and all(isinstance(t, str) for t in targets)):
            raise SubmissionError(_error("invalid_prompt", "partial_execution_targets must be a list of node ids"))
        result = validate(workflow.prompt, self.catalog.registry, targets=targets)
        if not result.ok and any(e.type == "value_not_in_list" for e in result.node_errors):
            # Choices may have changed since the schemas were taken (an uploaded image): refresh once.
            await self.refresh_schemas()
            result = validate(workflow.prompt, self.catalog.registry, targets=targets)
        if not result.ok:
            raise SubmissionError(result.to_comfy())
        prompt_id = body.get("prompt_id") or str(uuid.uuid4())
        if not isinstance(prompt_id, str) or self.store.get(prompt_id) is not None:
            raise SubmissionError(_error("invalid_prompt", "prompt_id must be a new, unique string"))
        client_id = body.get("client_id")
        if not isinstance(client_id, str):
            client_id = extra.get("client_id") if isinstance(extra.get("client_id"), str) else None
        if client_id is not None:
            extra["client_id"] = client_id
        number = body.get("number")
        if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float))
                                   or not math.isfinite(number)):
            raise SubmissionError(_error("invalid_prompt", "number must be a finite number"))
        item = self.store.add(prompt_id, workflow.prompt, extra, result.outputs, client_id=client_id,
                              front=bool(body.get("front")), number=number)
        self._enqueue(item)
        self.broadcast_status()
        self.dispatch()
        return Submitted(prompt_id, item.comfy_number, {})

    async def refresh_schemas(self) -> None:
        fresh = await self.pool.schemas(timeout=10.0)
        if fresh is not None:
            self.catalog.update(fresh)

    def wait_for(self, prompt_id: str) -> asyncio.Future[QueueItem]:
        future: asyncio.Future[QueueItem] = asyncio.get_running_loop().create_future()
        item = self.store.get(prompt_id)
        if item is not None and item.status not in ("pending", "running"):
            future.set_result(item)
        else:
            self.waiters.setdefault(prompt_id, []).append(future)
        return future

    # -- dispatch ----------------------------------------------------------------------------

    def dispatch(self) -> None:
        while self.pending:
            free = [w for w in self.pool.workers if w.free_slots > 0]
            if not free:
                return
            number, prompt_id = self.pending[0]
            wanted = self.models_of.get(prompt_id, set())
            worker = max(free, key=lambda w: (not w.inflight,
                                              len(wanted.intersection(w.models)), w.free_slots, -w.index))
            self.pending.pop(0)
            item = self.store.get(prompt_id)
            if item is None or item.status != "pending":
                continue
            job = Job(prompt_id, item.prompt, item.extra_data, item.outputs_to_execute)
            if not self.pool.submit(worker, job):
                bisect.insort(self.pending, (number, prompt_id))
                return
            worker.remember_models(wanted)

    # -- worker callbacks (PoolListener) ------------------------------------------------------

    def worker_ready(self, worker: WorkerHandle, schemas: dict[str, Any]) -> None:
        log.info("worker %s ready (pid %s, %d node types)", worker.device, worker.pid, len(schemas["object_info"]))
        self.catalog.update(schemas)
        self.schemas_ready.set()
        self.dispatch()

    def worker_event(self, worker: WorkerHandle, event: Any) -> None:
        prompt_id = event.prompt_id
        translator = self.translators.get(prompt_id)
        if translator is None:
            translator = self.translators[prompt_id] = PromptTranslator(prompt_id)
        if isinstance(event, ExecutionStart):
            self.store.mark_running(prompt_id, {"index": worker.index, "device": worker.device, "pid": worker.pid})
            self.broadcast_status()
        out = translator.translate(event)
        client_id = self.client_of.get(prompt_id)
        for msg in out.messages:
            if msg["type"] in _HISTORY_MESSAGES:
                self.messages.setdefault(prompt_id, []).append([msg["type"], msg["data"]])
            self.hub.send(client_id, msg)
        if out.preview is not None and out.node_id is not None:
            self.hub.send_binary(
                client_id,
                preview_frame(out.preview, node_id=out.node_id, prompt_id=prompt_id, with_metadata=False),
                preview_frame(out.preview, node_id=out.node_id, prompt_id=prompt_id, with_metadata=True))
        if out.text is not None and out.node_id is not None:
            frame = text_frame(out.node_id, out.text)
            self.hub.send_binary(client_id, frame, frame)

    def worker_done(self, worker: WorkerHandle, prompt_id: str, summary: dict[str, Any]) -> None:
        worker.model_stats = summary.get("models")
        status = summary["status"]
        error = summary.get("error")
        if status == "error" and error is not None and error.get("type") in ("validation", "internal"):
            # Failed before any node ran: clients still get ComfyUI's execution_error.
            data = failure_data(prompt_id, error["exception_message"], exception_type=error["exception_type"],
                                traceback=error.get("traceback"))
            self.messages.setdefault(prompt_id, []).append(["execution_error", data])
            self.hub.send(self.client_of.get(prompt_id), message("execution_error", data))
        self._finish(prompt_id, status, summary.get("outputs") or {}, error)
        self.dispatch()

    def worker_dropped(self, worker: WorkerHandle, prompt_id: str) -> None:
        self.dispatch()

    def worker_died(self, worker: WorkerHandle, reason: str, lost: list[str]) -> None:
        if lost:
            victim, rest = lost[0], lost[1:]
            translator = self.translators.get(victim)
            node = translator.running if translator else None
            item = self.store.get(victim)
            node_type = item.prompt.get(node, {}).get("class_type") if item and node else None
            text = reason + (f" while running node {node} ({node_type})" if node else "")
            data = failure_data(victim, text, exception_type="WorkerDied", node_id=node, node_type=node_type)
            self.messages.setdefault(victim, []).append(["execution_error", data])
            self.hub.send(self.client_of.get(victim), message("execution_error", data))
            self._finish(victim, "error", {}, {"type": "worker_died", "exception_type": "WorkerDied",
                                               "exception_message": text})
            for prompt_id in rest:
                item = self.store.get(prompt_id)
                if item is not None and item.status in ("pending", "running"):
                    self.store.mark_pending(prompt_id)
                    bisect.insort(self.pending, (item.number, prompt_id))
        self.dispatch()

    def _finish(self, prompt_id: str, status: str, outputs: dict[str, Any], error: dict[str, Any] | None) -> None:
        item = self.store.get(prompt_id)
        if item is not None and item.status != "cancelled":
            self.store.finish(prompt_id, status, outputs=outputs,  # type: ignore[arg-type]
                              messages=self.messages.get(prompt_id, []), error=error)
        self.hub.send(self.client_of.get(prompt_id), message("executing", {"node": None, "display_node": None,
                                                                         "prompt_id": prompt_id}))
        self.translators.pop(prompt_id, None)
        self.messages.pop(prompt_id, None)
        self.client_of.pop(prompt_id, None)
        self.models_of.pop(prompt_id, None)
        self.broadcast_status()
        finished = self.store.get(prompt_id)
        if finished is None:
            return
        for future in self.waiters.pop(prompt_id, []):
            if not future.done():
                future.set_result(finished)
        url = finished.extra_data.get("webhook_url")
        if url is not None and check_url(url) is None:
            task = asyncio.get_running_loop().create_task(
                post_completion(url, webhook_payload(finished), timeout=self.settings.webhook_timeout))
            self.webhook_tasks.add(task)
            task.add_done_callback(self.webhook_tasks.discard)

    # -- queue control -----------------------------------------------------------------------

    def queue_view(self) -> dict[str, Any]:
        """GET /queue: running first, then pending, each as ComfyUI's queue entry list."""
        return {"queue_running": [i.queue_entry() for i in self.store.by_status("running")],
                "queue_pending": [i.queue_entry() for i in self.store.by_status("pending")]}

    def history_item(self, prompt_id: str) -> dict[str, Any]:
        item = self.store.get(prompt_id)
        return {prompt_id: item.history_entry()} if item is not None else {}

    def history_view(self, max_items: int | None, offset: int) -> dict[str, Any]:
        return {i.prompt_id: i.history_entry() for i in self.store.history(max_items=max_items, offset=offset)}

    def queue_remaining(self) -> int:
        return self.store.count("pending", "running")

    def broadcast_status(self) -> None:
        self.hub.send(None, status_message(self.queue_remaining()))

    def cancel(self, prompt_ids: list[str]) -> list[str]:
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
            self.pool.cancel(prompt_id)
            self.client_of.pop(prompt_id, None)
            self.models_of.pop(prompt_id, None)
            for future in self.waiters.pop(prompt_id, []):
                item = self.store.get(prompt_id)
                if not future.done() and item is not None:
                    future.set_result(item)

    def interrupt(self, prompt_id: str | None) -> list[str]:
        return self.pool.interrupt(prompt_id)


_HISTORY_MESSAGES = frozenset({"execution_start", "execution_cached", "execution_success",
                               "execution_error", "execution_interrupted"})


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _is_api(document: Any) -> bool:
    return isinstance(document, dict) and all(isinstance(v, dict) and "class_type" in v for v in document.values())


def webhook_payload(item: QueueItem) -> dict[str, Any]:
    """What a completion webhook receives: the outcome up front, the full history entry beside it."""
    entry = item.history_entry()
    return {"prompt_id": item.prompt_id, "status": item.status, "outputs": entry["outputs"],
            "error": item.error, "history": {item.prompt_id: entry}}
