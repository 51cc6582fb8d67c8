"""POST/GET /prompt, /queue, /history, /interrupt, /free: thin wrappers over the scheduler."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from server.http.bodies import FreeRequest, InterruptRequest, PromptRequest, QueueRequest, body_schema, read_body
from server.queue.scheduler import Scheduler, SubmissionError
from server.wire.errors import error_body


# SQLite's LIMIT/OFFSET are 64-bit: larger values are a 400, not an OverflowError.
SQLITE_INT_MAX = 2**63 - 1


def scheduler_of(request: Request) -> Scheduler:
    return request.app.state.scheduler


def prompt_router() -> APIRouter:
    router = APIRouter(tags=["queue"])

    @router.post("/prompt", openapi_extra=body_schema(PromptRequest))
    async def post_prompt(request: Request,
                          wait: bool = Query(False, description="answer when the prompt has finished"),
                          timeout: float = Query(600.0, gt=0, le=3600)) -> JSONResponse:
        scheduler = scheduler_of(request)
        body = await read_body(request, PromptRequest)
        if body.prompt is None:
            return JSONResponse(error_body("no_prompt", "No prompt provided", "No prompt provided"),
                                status_code=400)
        try:
            submitted = await scheduler.submit(body.model_dump(exclude_none=True))
        except SubmissionError as exc:
            return JSONResponse(exc.body, status_code=exc.status)
        answer: dict[str, Any] = {"prompt_id": submitted.prompt_id, "number": submitted.number,
                                  "node_errors": submitted.node_errors}
        if not wait:
            return JSONResponse(answer)
        try:
            item = await asyncio.wait_for(asyncio.shield(scheduler.wait_for(submitted.prompt_id)), timeout)
        except asyncio.TimeoutError:
            return JSONResponse({**answer, "status": "timeout"}, status_code=202)
        entry = item.history_entry()
        return JSONResponse({**answer, "status": item.status, "outputs": entry["outputs"],
                             "error": item.error, "messages": entry["status"]["messages"]})

    @router.get("/prompt")
    async def get_prompt(request: Request) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": scheduler_of(request).queue_remaining()}}

    @router.get("/queue")
    async def get_queue(request: Request) -> dict[str, Any]:
        return scheduler_of(request).queue_view()

    @router.post("/queue", openapi_extra=body_schema(QueueRequest))
    async def post_queue(request: Request) -> dict[str, Any]:
        scheduler = scheduler_of(request)
        body = await read_body(request, QueueRequest)
        cancelled: list[str] = []
        if body.clear:
            cancelled += scheduler.clear_queue()
        if body.delete:
            cancelled += scheduler.cancel(body.delete)
        return {"cancelled": cancelled}

    @router.get("/history")
    async def get_history(request: Request, max_items: int | None = Query(None, ge=0, le=SQLITE_INT_MAX),
                          offset: int = Query(0, ge=0, le=SQLITE_INT_MAX)) -> dict[str, Any]:
        return scheduler_of(request).history_view(max_items, offset)

    @router.get("/history/{prompt_id}")
    async def get_history_item(request: Request, prompt_id: str) -> dict[str, Any]:
        return scheduler_of(request).history_item(prompt_id)

    @router.post("/history", openapi_extra=body_schema(QueueRequest))
    async def post_history(request: Request) -> dict[str, Any]:
        store = scheduler_of(request).store
        body = await read_body(request, QueueRequest)
        if body.clear:
            store.delete_history(None)
        if body.delete:
            store.delete_history(body.delete)
        return {}

    @router.post("/interrupt", openapi_extra=body_schema(InterruptRequest))
    async def post_interrupt(request: Request) -> dict[str, Any]:
        # ComfyUI's client posts with no body at all; a body, when present, may name the prompt.
        body = await read_body(request, InterruptRequest)
        return scheduler_of(request).interrupt_answer(body.prompt_id)

    @router.post("/free", openapi_extra=body_schema(FreeRequest))
    async def post_free(request: Request) -> dict[str, Any]:
        body = await read_body(request, FreeRequest)
        # As in ComfyUI, an empty request frees nothing; either flag unloads models and clears
        # the workers' caches (the editor's "free model and node cache" sends both).
        if body.unload_models or body.free_memory:
            scheduler_of(request).free()
        return {}

    return router
