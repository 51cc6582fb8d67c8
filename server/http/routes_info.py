"""GET /object_info, /system_stats, /features, /models: what clients ask before submitting."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from graph_runtime.folders import MODEL_FOLDERS
from server.wire.protocol import FEATURE_FLAGS
from server.queue.scheduler import Scheduler
from server.settings import ServerSettings

VERSION = "0.1.0"


def _scheduler(request: Request) -> Scheduler:
    return request.app.state.scheduler


def _memory() -> tuple[int, int]:
    """Total and available RAM in bytes, from /proc/meminfo (0, 0 where there is none)."""
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                key, _, rest = line.partition(":")
                values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return 0, 0
    return values.get("MemTotal", 0), values.get("MemAvailable", 0)


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


def info_router(settings: ServerSettings) -> APIRouter:
    router = APIRouter(tags=["info"])

    @router.get("/object_info")
    async def get_object_info(request: Request) -> dict[str, Any]:
        scheduler = _scheduler(request)
        # Ask a worker: choice lists such as the input folder's images change at any time.
        await scheduler.refresh_schemas()
        return scheduler.catalog.current_object_info()

    @router.get("/object_info/{node_class}")
    async def get_object_info_class(request: Request, node_class: str) -> dict[str, Any]:
        info = _scheduler(request).catalog.current_object_info()
        return {node_class: info[node_class]} if node_class in info else {}

    @router.get("/features")
    async def get_features() -> dict[str, Any]:
        return {**FEATURE_FLAGS, "max_upload_size": settings.max_upload_bytes}

    @router.get("/models")
    async def get_models() -> list[str]:
        return sorted(MODEL_FOLDERS)

    @router.get("/models/{folder}", response_model=None)
    async def get_models_in(folder: str) -> Any:
        if folder not in MODEL_FOLDERS:
            return JSONResponse({"error": {"type": "not_found", "message": f"no models folder {folder!r}"}},
                                status_code=404)
        return settings.folders.list_models(folder)

    @router.get("/system_stats")
    async def get_system_stats(request: Request) -> dict[str, Any]:
        scheduler = _scheduler(request)
        total, free = _memory()
        workers = scheduler.pool.stats()
        devices = [{"name": w["device"], "type": w["device"].split(":")[0], "index": i,
                    "vram_total": 0, "vram_free": 0, "torch_vram_total": 0, "torch_vram_free": 0}
                   for i, w in enumerate(workers)]
        return {
            "system": {"os": os.name, "ram_total": total, "ram_free": free, "comfyui_version": VERSION,
                       "required_frontend_version": _package_version("comfyui-frontend-package"),
                       "python_version": sys.version, "pytorch_version": _package_version("torch"),
                       "embedded_python": False, "argv": sys.argv, "platform": platform.platform()},
            "devices": devices,
            "nodeloom": {"version": VERSION, "server_pid": os.getpid(),
                         "workers": workers,
                         "websocket_clients": len(scheduler.hub.clients),
                         "queue_remaining": scheduler.queue_remaining(),
                         "plugins": list(scheduler.catalog.plugins)},
        }

    return router
