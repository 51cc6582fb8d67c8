"""The browser editor: ComfyUI's frontend served unmodified, plus the routes it calls besides the
core API, composed from their own modules (user files, catalogs, /jobs, /internal).

The frontend comes from the ``comfyui-frontend-package`` distribution (GPL-3.0, only static files)
or from ``settings.frontend_root``. Every name a request supplies goes through ``safe_join``
before it touches disk.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, PlainTextResponse, Response

from server.http.frontend_http import empty_stylesheet, join_or_refuse, media_type
from server.http.routes_catalog import catalog_router
from server.http.routes_internal import install_log_buffer, internal_router
from server.http.routes_jobs import jobs_router
from server.settings import ServerSettings
from server.http.user_files import USER
from server.http.userdata import userdata_router

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif", ".ico")
NO_STORE = {"Cache-Control": "no-cache", "Pragma": "no-cache", "Expires": "0"}


def default_frontend_root() -> Path | None:
    """The static folder of the installed comfyui-frontend-package, if it is installed."""
    try:
        import comfyui_frontend_package
    except ImportError:
        return None
    root = Path(comfyui_frontend_package.__file__).parent / "static"
    return root if (root / "index.html").is_file() else None


def frontend_router(settings: ServerSettings) -> APIRouter:
    """Routes for the browser editor. The static files are routed by their top-level names, not
    by a catch-all, so the order in which the app includes this router does not matter."""
    router = APIRouter()
    user_root = Path(settings.user_dir or settings.folders.base / "user") / USER
    root = Path(settings.frontend_root) if settings.frontend_root else default_frontend_root()
    router.include_router(userdata_router(user_root))
    router.include_router(catalog_router(settings, root))
    router.include_router(internal_router(settings.folders, install_log_buffer()))
    router.include_router(jobs_router())
    if root is not None:
        assert (root / "index.html").is_file(), f"frontend root {root} has no index.html"
        _static_routes(router, root)
    return router


def _cache_headers(path: Path) -> dict[str, str]:
    # As ComfyUI: scripts, styles and index files are revalidated every time (the ETag makes
    # that a 304), images are cached for a day.
    name = path.name.lower()
    if name.endswith((".js", ".css")) or (name.startswith("index") and name.endswith((".json", ".html"))):
        return {"Cache-Control": "no-cache"}
    if name.endswith(IMAGE_SUFFIXES):
        return {"Cache-Control": "public, max-age=86400"}
    return {}


def serve_file(root: Path, name: str, request: Request) -> Response:
    """``name`` from ``root`` with ComfyUI's cache headers and ETag revalidation."""
    path = join_or_refuse(root, name)
    if isinstance(path, Response):
        return path
    if not path.is_file():
        return PlainTextResponse(f"not found: {name}", status_code=404)
    stat = path.stat()
    etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
    headers = {"ETag": etag, **_cache_headers(path)}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type=media_type(path), headers=headers, stat_result=stat)


def _static_routes(router: APIRouter, root: Path) -> None:
    @router.get("/", include_in_schema=False)
    async def index() -> Response:
        return FileResponse(root / "index.html", media_type="text/html", headers=NO_STORE)

    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            _add_folder_route(router, root, entry.name)
        elif entry.name != "index.html":
            _add_file_route(router, root, entry.name)
    if not (root / "user.css").exists():
        @router.get("/user.css", include_in_schema=False)
        async def user_css() -> Response:
            # index.html links /user.css; ComfyUI answers 404, we answer an empty stylesheet.
            return empty_stylesheet()


def _add_folder_route(router: APIRouter, root: Path, folder: str) -> None:
    async def serve(name: str, request: Request) -> Response:
        return serve_file(root, f"{folder}/{name}", request)

    router.add_api_route(f"/{folder}/{{name:path}}", serve, methods=["GET", "HEAD"], include_in_schema=False)


def _add_file_route(router: APIRouter, root: Path, file: str) -> None:
    async def serve(request: Request) -> Response:
        return serve_file(root, file, request)

    router.add_api_route(f"/{file}", serve, methods=["GET", "HEAD"], include_in_schema=False)
