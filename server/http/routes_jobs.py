"""``/jobs``: the editor's queue and history panels, read from the scheduler's QueueStore
(``request.app.state.scheduler.store``). An app without a scheduler lists no jobs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from server.execution.outcome import RunFailure
from server.http.frontend_http import json_body
from server.queue.store import QueueItem
from server.wire.errors import error_body

# QueueStore status -> the editor's job status. Prompts removed from the queue before they ran
# ("cancelled" in the store) are gone from the panels, as they are from ComfyUI's /history.
JOB_STATUS = {"pending": "pending", "running": "in_progress", "success": "completed",
              "error": "failed", "interrupted": "cancelled"}
PREVIEWABLE = ("images", "video", "audio", "3d")
SORT_KEYS = ("created_at", "execution_duration")


def _ms(seconds: float | None) -> int | None:
    return int(seconds * 1000) if seconds is not None else None


def _outputs_summary(outputs: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    """How many output files a prompt made, and the one the panel shows (an output-folder image
    first, as ComfyUI's jobs API)."""
    count, preview, fallback = 0, None, None
    for node_id, node_outputs in outputs.items():
        for media, items in node_outputs.items() if isinstance(node_outputs, dict) else ():
            for item in items if isinstance(items, list) and media != "animated" else ():
                if not isinstance(item, dict):
                    continue
                count += 1
                if media in PREVIEWABLE and preview is None:
                    enriched = {**item, "nodeId": node_id, "mediaType": item.get("mediaType", media)}
                    if item.get("type") == "output":
                        preview = enriched
                    elif fallback is None:
                        fallback = enriched
    return count, preview or fallback


def _execution_error(item: QueueItem) -> dict[str, Any] | None:
    """Why a failed prompt failed, in the shape the editor validates: the stored RunFailure (the
    validation message, the node exception with its node, a dead worker)."""
    if item.status != "error":
        return None
    failure = RunFailure.from_dict(item.error or {})
    return failure.job_error(item.prompt_id)


def job_entry(item: QueueItem, *, detail: bool = False) -> dict[str, Any]:
    """One prompt as the editor's Jobs API describes it (``GET /jobs``, ``GET /jobs/{id}``)."""
    count, preview = _outputs_summary(item.outputs)
    pnginfo = item.extra_data.get("extra_pnginfo")
    # Rows stored before submissions checked extra_pnginfo may hold any JSON there.
    workflow = pnginfo.get("workflow") if isinstance(pnginfo, dict) else None
    job = {"id": item.prompt_id, "status": JOB_STATUS[item.status], "priority": item.comfy_number,
           "create_time": _ms(item.created), "execution_start_time": _ms(item.started),
           "execution_end_time": _ms(item.finished), "outputs_count": count, "preview_output": preview,
           "execution_error": _execution_error(item),
           "workflow_id": workflow.get("id") if isinstance(workflow, dict) else None}
    job = {k: v for k, v in job.items() if v is not None}
    if detail:
        job.update(outputs=item.outputs, workflow={"prompt": item.prompt, "extra_data": item.extra_data},
                   execution_status={"status_str": "success" if item.status == "success" else item.status,
                                     "completed": item.status == "success", "messages": item.messages,
                                     "state": item.status, "attempts": item.attempts, "worker": item.worker})
    return job


def job_page(jobs: list[dict[str, Any]], *, sort_by: str, sort_order: str, limit: int | None,
             offset: int) -> dict[str, Any]:
    """``jobs`` sorted and cut to one page, with the pagination block the panel reads."""

    def key(job: dict[str, Any]) -> float:
        if sort_by == "execution_duration":
            return job.get("execution_end_time", 0) - job.get("execution_start_time", 0)
        return job["create_time"]

    jobs = sorted(jobs, key=key, reverse=sort_order == "desc")
    start = max(offset, 0)
    page = jobs[start:start + limit] if limit is not None else jobs[start:]
    return {"jobs": page, "pagination": {
        "offset": start, "limit": limit if limit is not None else len(page), "total": len(jobs),
        "has_more": start + len(page) < len(jobs)}}


def _scheduler(request: Request) -> Any:
    return getattr(request.app.state, "scheduler", None)


def _cancel(request: Request, prompt_ids: list[str]) -> dict[str, list[str]]:
    """Pending prompts leave the queue; a running one is interrupted."""
    scheduler = _scheduler(request)
    if scheduler is None:
        return {"cancelled": [], "interrupted": []}
    cancelled = scheduler.cancel(prompt_ids)
    interrupted = [p for p in prompt_ids if p not in cancelled and
                   (item := scheduler.store.get(p)) is not None and item.status == "running"]
    for prompt_id in interrupted:
        scheduler.interrupt(prompt_id)
    return {"cancelled": cancelled, "interrupted": interrupted}


def jobs_router() -> APIRouter:
    router = APIRouter()

    @router.get("/jobs")
    async def list_jobs(request: Request, status: str = "", workflow_id: str = "", sort_by: str = "created_at",
                        sort_order: str = "desc", limit: int | None = None, offset: int = 0) -> Response:
        wanted = [s for s in status.split(",") if s] or list(JOB_STATUS.values())
        unknown = sorted(set(wanted) - set(JOB_STATUS.values()))
        problems = ([f"status: unknown {', '.join(unknown)}; use {', '.join(JOB_STATUS.values())}"] if unknown else [])
        if sort_by not in SORT_KEYS:
            problems.append(f"sort_by: unknown {sort_by!r}; use {', '.join(SORT_KEYS)}")
        if sort_order not in ("asc", "desc"):
            problems.append(f"sort_order: unknown {sort_order!r}; use asc or desc")
        if problems:
            return JSONResponse(error_body("invalid_query", "Invalid job query", "; ".join(problems)),
                                status_code=400)
        scheduler = _scheduler(request)
        items = scheduler.store.by_status(*JOB_STATUS) if scheduler is not None else []
        jobs = [job_entry(i) for i in items if JOB_STATUS[i.status] in wanted]
        if workflow_id:
            jobs = [j for j in jobs if j.get("workflow_id") == workflow_id]
        return JSONResponse(job_page(jobs, sort_by=sort_by, sort_order=sort_order, limit=limit, offset=offset))

    @router.get("/jobs/{prompt_id}")
    async def get_job(request: Request, prompt_id: str) -> Response:
        scheduler = _scheduler(request)
        item = scheduler.store.get(prompt_id) if scheduler is not None else None
        if item is None or item.status not in JOB_STATUS:
            return JSONResponse({"error": f"no job {prompt_id!r}"}, status_code=404)
        return JSONResponse(job_entry(item, detail=True))

    @router.post("/jobs/cancel")
    async def cancel_jobs(request: Request) -> Response:
        body = await json_body(request)
        ids = body.get("job_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return JSONResponse({"error": "expected {\"job_ids\": [prompt ids]}"}, status_code=400)
        return JSONResponse(_cancel(request, ids))

    @router.post("/jobs/{prompt_id}/cancel")
    async def cancel_job(request: Request, prompt_id: str) -> Response:
        return JSONResponse(_cancel(request, [prompt_id]))

    return router
