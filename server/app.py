"""The app factory: every router mounted at / and again under /api (as ComfyUI), the access
middleware around all of them, the scheduler started and stopped with the app."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from graph_runtime.deferred import remove_partial_files
from server.http.body_limits import BodyLimitMiddleware, BodyLimits
from server.http.routes_files import files_router
from server.http.routes_info import VERSION, info_router
from server.http.routes_prompt import prompt_router
from server.http.routes_ws import ws_router
from server.queue.scheduler import Scheduler
from server.http.security import SecurityMiddleware
from server.settings import ServerSettings
from server.wire.errors import error_body

log = logging.getLogger(__name__)


def _frontend(settings: ServerSettings) -> APIRouter | None:
    try:
        from server.http.frontend import frontend_router
    except ImportError as exc:
        log.info("frontend routes not available: %s", exc)
        return None
    return frontend_router(settings)


def create_app(settings: ServerSettings) -> FastAPI:
    settings.check_exposure()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # No worker runs yet: a .partial file now was left by one killed while writing it.
        for folder in (settings.folders.output_dir, settings.folders.temp_dir):
            if removed := remove_partial_files(folder):
                log.warning("removed %d incomplete output file(s) under %s", removed, folder)
        scheduler = Scheduler(settings)
        app.state.scheduler = scheduler
        await scheduler.start()
        # The server starts listening (its first 200) only once a worker is warm, so "answers"
        # means "runs a prompt now". A worker that cannot start does not keep the server down:
        # after the timeout it serves anyway and /system_stats shows each worker's state.
        if not await scheduler.wait_ready(settings.worker_start_timeout):
            log.warning("no worker ready after %.0f s; serving anyway", settings.worker_start_timeout)
        try:
            yield
        finally:
            await scheduler.stop()

    options: dict[str, Any] = {}
    if "strict_content_type" in inspect.signature(FastAPI).parameters:
        # ComfyUI's own example scripts post JSON with urllib's form content type.
        options["strict_content_type"] = False
    app = FastAPI(title="NodeLoom", version=VERSION, lifespan=lifespan, **options,
                  description="ComfyUI-compatible API: queue prompts, follow them over /ws, fetch outputs.")
    app.state.settings = settings
    routers = [prompt_router(), files_router(settings), info_router(settings), ws_router(settings)]
    frontend = _frontend(settings)
    for router in routers:
        app.include_router(router)
        app.include_router(router, prefix="/api", include_in_schema=False)
    if frontend is not None:
        # Mounted last: it serves the static frontend at "/", which must not shadow API routes.
        app.include_router(frontend, prefix="/api", include_in_schema=False)
        app.include_router(frontend)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _invalid(exc.errors())

    @app.exception_handler(ValidationError)
    async def bad_body(request: Request, exc: ValidationError) -> JSONResponse:
        return _invalid(exc.errors())

    if settings.allow_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.allow_origins, allow_methods=["*"],
                           allow_headers=["*"])
    # Inside the access check: a refused request's body is never read at all.
    app.add_middleware(BodyLimitMiddleware, limits=BodyLimits(
        upload=settings.max_upload_bytes, prompt=settings.max_prompt_bytes,
        userdata=settings.max_userdata_bytes, other=settings.max_body_bytes))
    app.add_middleware(SecurityMiddleware, settings=settings)
    return app


def _invalid(errors: object) -> JSONResponse:
    details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in errors  # type: ignore[attr-defined]
               if isinstance(e, dict)]
    text = "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in details) or "invalid request"
    return JSONResponse(error_body("invalid_request", text, details), status_code=400)
