"""The browser editor: ComfyUI's frontend served unmodified, plus the routes it calls besides the
core API (settings, user files, i18n, templates, extensions, embeddings, logs, folder listings).

The frontend comes from the ``comfyui-frontend-package`` distribution (GPL-3.0, only static files)
or from ``settings.frontend_root``. Per-user data lives in ``<user_dir>/default`` as in ComfyUI's
single-user mode. Every name a request supplies goes through ``safe_join`` before it touches disk.
"""

from __future__ import annotations

import collections
import json
import logging
import mimetypes
import os
import re
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response

from graph_runtime.folders import MODEL_FOLDERS, FolderPaths, UnsafePath, safe_join
from server.queue_store import QueueItem
from server.settings import ServerSettings

log = logging.getLogger(__name__)

USER = "default"
SETTINGS_FILE = "comfy.settings.json"
# Folders of a plugin whose *.json files are offered as workflow templates, first found wins.
TEMPLATE_FOLDERS = ("example_workflows", "workflow_templates", "examples")
# Per-language files of a plugin's locales/<lang>/ folder merged into /i18n, besides main.json.
LOCALE_SECTIONS = ("nodeDefs", "commands", "settings")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif", ".ico")
# Platform MIME tables disagree on these (Windows' registry famously maps .js to text/plain,
# which browsers refuse for module scripts), so they are fixed here.
MEDIA_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
               ".json": "application/json", ".map": "application/json", ".wasm": "application/wasm",
               ".svg": "image/svg+xml", ".woff2": "font/woff2", ".webp": "image/webp"}
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
    _user_routes(router, UserFiles(user_root))
    _catalog_routes(router, settings, root)
    _internal_routes(router, settings.folders, install_log_buffer())
    _jobs_routes(router)
    if root is not None:
        assert (root / "index.html").is_file(), f"frontend root {root} has no index.html"
        _static_routes(router, root)
    return router


# -- user files ---------------------------------------------------------------------------------


class UserFiles:
    """One user's folder: settings, workflows, keybindings, blueprints, anything the editor saves."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        """The file ``name`` names inside the folder; UnsafePath if it would leave it."""
        return safe_join(self.root, name)

    def info(self, path: Path, relative_to: Path | None = None) -> dict[str, Any]:
        stat = path.stat()
        return {"path": path.relative_to((relative_to or self.root).resolve()).as_posix(),
                "size": stat.st_size, "modified": stat.st_mtime, "created": stat.st_ctime}

    def files(self, directory: Path, *, recurse: bool) -> list[Path]:
        """Regular files under ``directory``, skipping links that point out of the user folder."""
        found: list[Path] = []
        for current, dirs, names in os.walk(directory):
            found += [Path(current) / n for n in names if self.inside(Path(current) / n)]
            if not recurse:
                break
            dirs[:] = [d for d in dirs if self.inside(Path(current) / d)]
        return sorted(p for p in found if p.is_file())

    def inside(self, path: Path) -> bool:
        root = self.root.resolve()
        return root in path.resolve().parents

    def write(self, path: Path, body: bytes) -> None:
        # Written beside the target then renamed, so a crash never leaves half a workflow.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, staged = tempfile.mkstemp(prefix=".nodeloom-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(body)
            os.replace(staged, path)
        finally:
            if os.path.exists(staged):
                os.unlink(staged)

    def settings(self) -> dict[str, Any]:
        path = self.root / SETTINGS_FILE
        if not path.is_file():
            return {}
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.error("ignoring unreadable settings file %s: %s", path, exc)
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def save_settings(self, values: dict[str, Any]) -> None:
        self.write(self.root / SETTINGS_FILE, json.dumps(values, indent=4).encode("utf-8"))


def _refused(name: str, exc: Exception) -> Response:
    return PlainTextResponse(f"refusing path {name!r}: {exc}", status_code=403)


def _flag(request: Request, name: str, default: str) -> bool:
    return request.query_params.get(name, default).lower() == "true"


def _userdata_names(request: Request) -> list[str]:
    """The file names after ``/userdata/``, each URL-decoded once.

    The editor sends ``workflows%2Fa.json``: the separator must stay inside one segment, so the
    split happens on the raw path. Decoding only once means ``..%252F`` stays a harmless literal.
    """
    raw = request.scope.get("raw_path") or request.url.path.encode()
    tail = raw.decode("latin-1").split("/userdata/", 1)[1]
    segments = tail.split("/")
    if len(segments) >= 3 and segments[-2] == "move":
        groups = [segments[:-2], segments[-1:]]
    else:
        groups = [segments]
    return ["/".join(unquote(s, errors="strict") for s in group) for group in groups]


def _user_routes(router: APIRouter, files: UserFiles) -> None:
    @router.get("/users")
    async def get_users() -> dict[str, Any]:
        # Single-user mode: the editor stores settings on the server, in the "default" folder.
        return {"storage": "server", "migrated": files.root.exists()}

    @router.post("/users")
    async def post_users() -> Response:
        return JSONResponse({"error": "this server runs in single-user mode (user 'default')"},
                            status_code=400)

    @router.get("/settings")
    async def get_settings() -> dict[str, Any]:
        return files.settings()

    @router.post("/settings")
    async def post_settings(request: Request) -> Response:
        values = await _json_body(request)
        if not isinstance(values, dict):
            return PlainTextResponse("settings must be a JSON object", status_code=400)
        files.save_settings({**files.settings(), **values})
        return Response(status_code=200)

    @router.get("/settings/{setting_id:path}")
    async def get_setting(setting_id: str) -> Any:
        return files.settings().get(setting_id)

    @router.post("/settings/{setting_id:path}")
    async def post_setting(setting_id: str, request: Request) -> Response:
        values = files.settings()
        values[setting_id] = await _json_body(request)
        files.save_settings(values)
        return Response(status_code=200)

    @router.get("/userdata")
    async def list_userdata(request: Request) -> Response:
        name = request.query_params.get("dir", "")
        if not name:
            return PlainTextResponse("the dir parameter is required", status_code=400)
        try:
            directory = files.path(name[:-1] if name.endswith("/") and len(name) > 1 else name)
        except UnsafePath as exc:
            return _refused(name, exc)
        if not directory.is_dir():
            # A folder the editor has not written to yet (workflows/, subgraphs/) holds nothing.
            return JSONResponse([])
        found = files.files(directory, recurse=_flag(request, "recurse", "false"))
        if _flag(request, "full_info", "false"):
            return JSONResponse([files.info(p, directory) for p in found])
        relative = [p.relative_to(directory.resolve()).as_posix() for p in found]
        if _flag(request, "split", "false"):
            return JSONResponse([[r, *r.split("/")] for r in relative])
        return JSONResponse(relative)

    @router.get("/v2/userdata")
    async def list_userdata_v2(request: Request) -> Response:
        name = request.query_params.get("path", "").strip("/")
        try:
            directory = files.path(name) if name else files.root
        except UnsafePath as exc:
            return _refused(name, exc)
        if not directory.exists():
            return JSONResponse([]) if not name else PlainTextResponse("path not found", status_code=404)
        if not directory.is_dir():
            return PlainTextResponse(f"{name!r} is not a directory", status_code=400)
        entries = []
        for path in sorted(directory.resolve().rglob("*")):
            if not files.inside(path):
                continue
            entry: dict[str, Any] = {"name": path.name, "path": path.relative_to(files.root.resolve()).as_posix(),
                                     "type": "directory" if path.is_dir() else "file"}
            if path.is_file():
                stat = path.stat()
                entry.update(size=stat.st_size, modified=stat.st_mtime)
            entries.append(entry)
        entries.sort(key=lambda e: (e["type"] != "directory", e["name"].lower()))
        return JSONResponse(entries)

    @router.get("/userdata/{name:path}")
    async def get_userdata(request: Request) -> Response:
        name = _userdata_names(request)[0]
        try:
            path = files.path(name)
        except UnsafePath as exc:
            return _refused(name, exc)
        if path.is_file():
            return FileResponse(path, media_type=_media_type(path), headers={"Cache-Control": "no-cache"})
        if name == "user.css":
            # index.html always links the user's stylesheet; none written yet is an empty one.
            return Response("", media_type="text/css", headers={"Cache-Control": "no-cache"})
        return PlainTextResponse(f"no user file {name!r}", status_code=404)

    @router.post("/userdata/{name:path}")
    async def post_userdata(request: Request) -> Response:
        names = _userdata_names(request)
        overwrite = _flag(request, "overwrite", "true")
        try:
            paths = [files.path(n) for n in names]
        except UnsafePath as exc:
            return _refused("/".join(names), exc)
        if len(paths) == 2:
            return _move(files, *paths, overwrite=overwrite, full_info=_flag(request, "full_info", "false"))
        path = paths[0]
        if path.is_dir():
            return PlainTextResponse(f"{names[0]!r} is a folder", status_code=400)
        if not overwrite and path.exists():
            return PlainTextResponse("file already exists", status_code=409)
        files.write(path, await request.body())
        return JSONResponse(files.info(path) if _flag(request, "full_info", "false")
                            else path.relative_to(files.root.resolve()).as_posix())

    @router.delete("/userdata/{name:path}")
    async def delete_userdata(request: Request) -> Response:
        name = _userdata_names(request)[0]
        try:
            path = files.path(name)
        except UnsafePath as exc:
            return _refused(name, exc)
        if not path.is_file():
            return PlainTextResponse(f"no user file {name!r}", status_code=404)
        path.unlink()
        return Response(status_code=204)


def _move(files: UserFiles, source: Path, dest: Path, *, overwrite: bool, full_info: bool) -> Response:
    if not source.is_file():
        return PlainTextResponse("no such user file", status_code=404)
    if not overwrite and dest.exists():
        return PlainTextResponse("file already exists", status_code=409)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(source, dest)
    return JSONResponse(files.info(dest) if full_info else dest.relative_to(files.root.resolve()).as_posix())


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError:
        return None


# -- catalogs: i18n, templates, embeddings ------------------------------------------------------


def _plugin_folders(settings: ServerSettings) -> dict[str, Path]:
    """Folder plugins by name, found without importing them (the workers import the code)."""
    found: dict[str, Path] = {}
    for directory in settings.plugin_dirs:
        if Path(directory).is_dir():
            for path in sorted(Path(directory).iterdir()):
                if path.is_dir() and not path.name.startswith((".", "_")):
                    found.setdefault(path.name, path)
    return found


def _template_folder(plugin: Path) -> Path | None:
    return next((plugin / f for f in TEMPLATE_FOLDERS if (plugin / f).is_dir()), None)


def _deep_merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("skipping unreadable %s: %s", path, exc)
        return None


def plugin_translations(plugins: dict[str, Path]) -> dict[str, Any]:
    """ComfyUI's custom-node i18n: locales/<lang>/main.json at the top level of each language,
    nodeDefs/commands/settings.json under their own keys, merged over every plugin."""
    merged: dict[str, Any] = {}
    for plugin in plugins.values():
        for lang_dir in sorted((plugin / "locales").glob("*/")):
            lang: dict[str, Any] = {}
            main = _read_json(lang_dir / "main.json") if (lang_dir / "main.json").is_file() else None
            if isinstance(main, dict):
                lang.update(main)
            for section in LOCALE_SECTIONS:
                if (lang_dir / f"{section}.json").is_file():
                    value = _read_json(lang_dir / f"{section}.json")
                    if isinstance(value, dict):
                        lang[section] = value
            _deep_merge(merged.setdefault(lang_dir.name, {}), lang)
    return merged


def _catalog_routes(router: APIRouter, settings: ServerSettings, root: Path | None) -> None:
    @router.get("/extensions")
    async def extensions() -> list[str]:
        # The editor's own extensions/ scripts, as ComfyUI lists them (the editor skips the
        # extensions/core shims itself). Plugins here ship Python nodes, not browser scripts.
        if root is None or not (root / "extensions").is_dir():
            return []
        return sorted("/" + p.relative_to(root).as_posix() for p in (root / "extensions").rglob("*.js"))

    @router.get("/i18n")
    async def i18n() -> dict[str, Any]:
        return plugin_translations(_plugin_folders(settings))

    @router.get("/workflow_templates")
    async def workflow_templates() -> dict[str, list[str]]:
        listing = {}
        for name, plugin in _plugin_folders(settings).items():
            folder = _template_folder(plugin)
            if folder is not None:
                listing[name] = sorted(p.stem for p in folder.glob("*.json"))
        return {name: names for name, names in listing.items() if names}

    @router.get("/workflow_templates/{plugin}/{name:path}")
    async def workflow_template(plugin: str, name: str) -> Response:
        folder = _template_folder(_plugin_folders(settings)[plugin]) if plugin in _plugin_folders(settings) else None
        if folder is None:
            return PlainTextResponse(f"no plugin {plugin!r} with workflow templates", status_code=404)
        try:
            path = safe_join(folder, name)
        except UnsafePath as exc:
            return _refused(name, exc)
        if not path.is_file():
            return PlainTextResponse(f"plugin {plugin!r} has no template {name!r}", status_code=404)
        return FileResponse(path, media_type=_media_type(path))

    @router.get("/embeddings")
    async def embeddings() -> list[str]:
        return [os.path.splitext(name)[0] for name in settings.folders.list_models("embeddings")]

    @router.get("/templates/{name}")
    async def core_templates(name: str) -> Response:
        # The editor's own template gallery index (index.json, index.<lang>.json). We bundle no
        # template gallery; an empty index is the truthful answer and keeps the dialog working.
        if re.fullmatch(r"index(\.[\w-]+)?\.json", name):
            return JSONResponse([])
        if name == "index_logo.json":
            return JSONResponse({})
        return PlainTextResponse(f"no template file {name!r}", status_code=404)

    @router.get("/global_subgraphs")
    async def global_subgraphs() -> dict[str, Any]:
        # Subgraph blueprints shipped by node packs; ours ship Python nodes only.
        return {}

    @router.get("/global_subgraphs/{subgraph_id}")
    async def global_subgraph(subgraph_id: str) -> Response:
        return JSONResponse({"error": f"no global subgraph {subgraph_id!r}"}, status_code=404)

    @router.get("/experiment/models")
    async def model_folders() -> list[dict[str, Any]]:
        # The editor's model library sidebar: every models folder and where it is looked up.
        return [{"name": name, "folders": [str(p) for p in settings.folders.model_dirs(name)]}
                for name in MODEL_FOLDERS]

    @router.get("/experiment/models/{folder}")
    async def model_files(folder: str) -> Response:
        if folder not in MODEL_FOLDERS:
            return JSONResponse({"error": f"unknown models folder {folder!r}"}, status_code=404)
        roots = settings.folders.model_dirs(folder)
        entries = []
        for name in settings.folders.list_models(folder):
            index = next(i for i, root in enumerate(roots) if (root / name).exists())
            stat = (roots[index] / name).stat()
            entries.append({"name": name, "pathIndex": index, "modified": stat.st_mtime,
                            "created": stat.st_ctime, "size": stat.st_size})
        return JSONResponse(entries)


# -- /jobs: the queue and history panels ---------------------------------------------------------

# QueueStore status -> the editor's job status. Prompts removed from the queue before they ran
# ("cancelled" in the store) are gone from the panels, as they are from ComfyUI's /history.
JOB_STATUS = {"pending": "pending", "running": "in_progress", "success": "completed",
              "error": "failed", "interrupted": "cancelled"}
PREVIEWABLE = ("images", "video", "audio", "3d")
_ERROR_FIELDS = {"node_id": str, "node_type": str, "exception_message": str, "exception_type": str,
                 "traceback": list}


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
    """The execution_error message of a failed prompt, in the shape the editor validates."""
    if item.status != "error":
        return None
    for kind, data in reversed(item.messages):
        if kind == "execution_error" and isinstance(data, dict) and all(
                isinstance(data.get(k), t) for k, t in _ERROR_FIELDS.items()):
            return data
    error = item.error or {}
    return {"prompt_id": item.prompt_id, "node_id": str(error.get("node_id", "")),
            "node_type": str(error.get("node_type", "")),
            "exception_message": str(error.get("message", "the prompt failed")),
            "exception_type": str(error.get("type", "error")), "traceback": []}


def job_entry(item: QueueItem, *, detail: bool = False) -> dict[str, Any]:
    """One prompt as the editor's Jobs API describes it (``GET /jobs``, ``GET /jobs/{id}``)."""
    count, preview = _outputs_summary(item.outputs)
    workflow = (item.extra_data.get("extra_pnginfo") or {}).get("workflow") or {}
    job = {"id": item.prompt_id, "status": JOB_STATUS[item.status], "priority": item.comfy_number,
           "create_time": _ms(item.created), "execution_start_time": _ms(item.started),
           "execution_end_time": _ms(item.finished), "outputs_count": count, "preview_output": preview,
           "execution_error": _execution_error(item),
           "workflow_id": workflow.get("id") if isinstance(workflow, dict) else None}
    job = {k: v for k, v in job.items() if v is not None}
    if detail:
        job.update(outputs=item.outputs, workflow={"prompt": item.prompt, "extra_data": item.extra_data},
                   execution_status={"status_str": "success" if item.status == "success" else item.status,
                                     "completed": item.status == "success", "messages": item.messages})
    return job


def _scheduler(request: Request) -> Any:
    return getattr(request.app.state, "scheduler", None)


def _jobs_routes(router: APIRouter) -> None:
    @router.get("/jobs")
    async def list_jobs(request: Request, status: str = "", workflow_id: str = "", sort_by: str = "created_at",
                        sort_order: str = "desc", limit: int | None = None, offset: int = 0) -> Response:
        wanted = [s for s in status.split(",") if s] or list(JOB_STATUS.values())
        unknown = sorted(set(wanted) - set(JOB_STATUS.values()))
        if unknown or sort_by not in ("created_at", "execution_duration") or sort_order not in ("asc", "desc"):
            return JSONResponse({"error": f"unknown status {unknown}, sort_by {sort_by!r} or sort_order "
                                          f"{sort_order!r}"}, status_code=400)
        scheduler = _scheduler(request)
        items = scheduler.store.by_status(*JOB_STATUS) if scheduler is not None else []
        jobs = [job_entry(i) for i in items if JOB_STATUS[i.status] in wanted]
        if workflow_id:
            jobs = [j for j in jobs if j.get("workflow_id") == workflow_id]

        def key(job: dict[str, Any]) -> float:
            if sort_by == "execution_duration":
                return job.get("execution_end_time", 0) - job.get("execution_start_time", 0)
            return job["create_time"]

        jobs.sort(key=key, reverse=sort_order == "desc")
        start = max(offset, 0)
        page = jobs[start:start + limit] if limit is not None else jobs[start:]
        return JSONResponse({"jobs": page, "pagination": {
            "offset": start, "limit": limit if limit is not None else len(page), "total": len(jobs),
            "has_more": start + len(page) < len(jobs)}})

    @router.get("/jobs/{prompt_id}")
    async def get_job(request: Request, prompt_id: str) -> Response:
        scheduler = _scheduler(request)
        item = scheduler.store.get(prompt_id) if scheduler is not None else None
        if item is None or item.status not in JOB_STATUS:
            return JSONResponse({"error": f"no job {prompt_id!r}"}, status_code=404)
        return JSONResponse(job_entry(item, detail=True))

    @router.post("/jobs/cancel")
    async def cancel_jobs(request: Request) -> Response:
        body = await _json_body(request)
        ids = body.get("job_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return JSONResponse({"error": "expected {\"job_ids\": [prompt ids]}"}, status_code=400)
        return JSONResponse(_cancel(request, ids))

    @router.post("/jobs/{prompt_id}/cancel")
    async def cancel_job(request: Request, prompt_id: str) -> Response:
        return JSONResponse(_cancel(request, [prompt_id]))


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


# -- /internal: folders, files, logs ------------------------------------------------------------


class LogBuffer(logging.Handler):
    """The last log records, for the editor's log panel (``/internal/logs``)."""

    def __init__(self, capacity: int = 300) -> None:
        super().__init__(level=logging.INFO)
        self.entries: collections.deque[dict[str, str]] = collections.deque(maxlen=capacity)
        # Websocket client ids that asked for live "logs" messages (PATCH /internal/logs/subscribe).
        self.subscribers: set[str] = set()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record) + "\n"
        except Exception:  # noqa: BLE001 - a bad format argument must not break the caller
            self.handleError(record)
            return
        self.entries.append({"t": datetime.fromtimestamp(record.created).isoformat(), "m": message})

    def text(self) -> str:
        return "".join(f"{e['t']} - {e['m']}" for e in self.entries)


def install_log_buffer() -> LogBuffer:
    """The root logger's LogBuffer, added on first use (one per process, however many apps)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, LogBuffer):
            return handler
    buffer = LogBuffer()
    root.addHandler(buffer)
    return buffer


def _internal_routes(router: APIRouter, folders: FolderPaths, logs: LogBuffer) -> None:
    @router.get("/internal/folder_paths")
    async def folder_paths() -> dict[str, list[str]]:
        return {name: [str(p) for p in folders.model_dirs(name)] for name in MODEL_FOLDERS}

    @router.get("/internal/files/{kind}")
    async def internal_files(kind: str) -> Response:
        if kind not in ("input", "output", "temp"):
            return JSONResponse({"error": f"unknown folder type {kind!r}; expected input, output or temp"},
                                status_code=400)
        directory = folders.directory_for(kind)
        entries = [e for e in os.scandir(directory) if e.is_file() and not e.name.startswith(".")] \
            if directory.is_dir() else []
        entries.sort(key=lambda e: -e.stat().st_mtime)
        return JSONResponse([e.name for e in entries])

    @router.get("/internal/logs")
    async def internal_logs() -> str:
        return logs.text()

    @router.get("/internal/logs/raw")
    async def internal_logs_raw() -> dict[str, Any]:
        size = shutil.get_terminal_size((120, 40))
        return {"entries": list(logs.entries), "size": {"cols": size.columns, "rows": size.lines}}

    @router.patch("/internal/logs/subscribe")
    async def internal_logs_subscribe(request: Request) -> Response:
        body = await _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("clientId"), str):
            return PlainTextResponse("expected {enabled, clientId}", status_code=400)
        if body.get("enabled"):
            logs.subscribers.add(body["clientId"])
        else:
            logs.subscribers.discard(body["clientId"])
        return Response(status_code=200)


# -- static files -------------------------------------------------------------------------------


def _media_type(path: Path) -> str:
    return MEDIA_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


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
    try:
        path = safe_join(root, name)
    except UnsafePath as exc:
        return _refused(name, exc)
    if not path.is_file():
        return PlainTextResponse(f"not found: {name}", status_code=404)
    stat = path.stat()
    etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
    headers = {"ETag": etag, **_cache_headers(path)}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type=_media_type(path), headers=headers, stat_result=stat)


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
            return Response("", media_type="text/css", headers={"Cache-Control": "no-cache"})


def _add_folder_route(router: APIRouter, root: Path, folder: str) -> None:
    async def serve(name: str, request: Request) -> Response:
        return serve_file(root, f"{folder}/{name}", request)

    router.add_api_route(f"/{folder}/{{name:path}}", serve, methods=["GET", "HEAD"], include_in_schema=False)


def _add_file_route(router: APIRouter, root: Path, file: str) -> None:
    async def serve(request: Request) -> Response:
        return serve_file(root, file, request)

    router.add_api_route(f"/{file}", serve, methods=["GET", "HEAD"], include_in_schema=False)

