"""GET /view, POST /upload/image, POST /upload/mask."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from server.http.files import FileRequestError, store_mask, store_upload, view
from server.settings import ServerSettings


def _failure(exc: FileRequestError) -> JSONResponse:
    return JSONResponse({"error": {"type": "bad_file_request", "message": exc.message}}, status_code=exc.status,
                        headers={"X-Content-Type-Options": "nosniff"})


async def _read_limited(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise FileRequestError(413, f"upload exceeds the limit of {limit} bytes")
    return data


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes", "on")


def files_router(settings: ServerSettings) -> APIRouter:
    router = APIRouter(tags=["files"])
    folders = settings.folders

    @router.get("/view", response_model=None)
    async def get_view(filename: str = Query(...), type: str = Query("output"), subfolder: str = Query(""),
                       preview: str | None = Query(None), channel: str | None = Query(None)) -> Response:
        try:
            served = await run_in_threadpool(view, folders, filename=filename, kind=type, subfolder=subfolder,
                                             preview=preview, channel=channel, max_pixels=settings.max_image_pixels)
        except FileRequestError as exc:
            return _failure(exc)
        headers = served.headers(filename)
        if isinstance(served.content, Path):
            return FileResponse(served.content, media_type=served.media_type, headers=headers)
        return Response(served.content, media_type=served.media_type, headers=headers)

    @router.post("/upload/image")
    async def upload_image(request: Request, image: UploadFile = File(...), overwrite: str | None = Form(None),
                           type: str = Form("input"), subfolder: str = Form("")) -> JSONResponse:
        try:
            data = await _read_limited(image, settings.max_upload_bytes)
            stored = await run_in_threadpool(store_upload, folders, data, filename=image.filename or "", kind=type,
                                             subfolder=subfolder, overwrite=_flag(overwrite),
                                             max_bytes=settings.max_upload_bytes,
                                             max_pixels=settings.max_image_pixels)
        except FileRequestError as exc:
            return _failure(exc)
        return JSONResponse(stored.as_dict())

    @router.post("/upload/mask")
    async def upload_mask(request: Request, image: UploadFile = File(...), original_ref: str = Form(...),
                          overwrite: str | None = Form(None), type: str = Form("input"),
                          subfolder: str = Form("")) -> JSONResponse:
        try:
            data = await _read_limited(image, settings.max_upload_bytes)
            stored = await run_in_threadpool(store_mask, folders, data, filename=image.filename or "",
                                             original_ref=original_ref, subfolder=subfolder, kind=type,
                                             overwrite=_flag(overwrite), max_bytes=settings.max_upload_bytes,
                                             max_pixels=settings.max_image_pixels)
        except FileRequestError as exc:
            return _failure(exc)
        return JSONResponse(stored.as_dict())

    return router
