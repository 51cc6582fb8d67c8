"""The editor's per-user file store: ``/users``, ``/settings``, ``/userdata`` and ``/v2/userdata``.

Per-user data lives in ``<user_dir>/default`` as in ComfyUI's single-user mode. Every name a
request supplies goes through ``safe_join`` before it touches disk.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request
from fastapi import Path as FastPath
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from graph_runtime.folders import UnsafePath, safe_join
from server.http.frontend_http import empty_stylesheet, flag, join_or_refuse, json_body, media_type, refused
from server.http.user_files import NotRegularFile, UserFiles, read_whole, write_refused


def userdata_router(root: Path) -> APIRouter:
    """The routes of the user folder ``root``."""
    router = APIRouter()
    files = UserFiles(root)
    _settings_routes(router, files)
    _listing_routes(router, files)
    _file_routes(router, files)
    return router


def _settings_routes(router: APIRouter, files: UserFiles) -> None:
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
        values = await json_body(request)
        if not isinstance(values, dict):
            return PlainTextResponse("settings must be a JSON object", status_code=400)
        return files.save_settings({**files.settings(), **values}) or Response(status_code=200)

    @router.get("/settings/{setting_id:path}")
    async def get_setting(setting_id: str) -> Any:
        return files.settings().get(setting_id)

    @router.post("/settings/{setting_id:path}")
    async def post_setting(setting_id: str, request: Request) -> Response:
        values = files.settings()
        values[setting_id] = await json_body(request)
        return files.save_settings(values) or Response(status_code=200)


def _listing_routes(router: APIRouter, files: UserFiles) -> None:
    @router.get("/userdata")
    async def list_userdata(request: Request) -> Response:
        name = request.query_params.get("dir", "")
        if not name:
            return PlainTextResponse("the dir parameter is required", status_code=400)
        try:
            directory = safe_join(files.root, name[:-1] if name.endswith("/") and len(name) > 1 else name)
        except UnsafePath as exc:
            return refused(name, exc)
        if not directory.is_dir():
            # A folder the editor has not written to yet (workflows/, subgraphs/) holds nothing.
            return JSONResponse([])
        found = files.files(directory, recurse=flag(request, "recurse", "false"))
        if flag(request, "full_info", "false"):
            return JSONResponse([files.info(p, directory) for p in found])
        relative = [files.relative(p, directory) for p in found]
        if flag(request, "split", "false"):
            return JSONResponse([[r, *r.split("/")] for r in relative])
        return JSONResponse(relative)

    @router.get("/v2/userdata")
    async def list_userdata_v2(request: Request) -> Response:
        name = request.query_params.get("path", "").strip("/")
        directory = join_or_refuse(files.root, name) if name else files.root
        if isinstance(directory, Response):
            return directory
        if not directory.exists():
            return JSONResponse([]) if not name else PlainTextResponse("path not found", status_code=404)
        if not directory.is_dir():
            return PlainTextResponse(f"{name!r} is not a directory", status_code=400)
        return JSONResponse(files.v2_entries(directory))


class BadName(ValueError):
    """A ``/userdata/`` name that is not percent-encoded UTF-8."""


def _userdata_names(request: Request) -> list[str]:
    """The file names after ``/userdata/``, each URL-decoded once: one, or a source and a
    destination for ``/userdata/{source}/move/{destination}``.

    The editor sends ``workflows%2Fa.json``: the separator must stay inside one segment, so the
    split happens on the raw path. Decoding only once means ``..%252F`` stays a harmless literal.
    Raises BadName for bytes that are not UTF-8 (``%ff``).
    """
    raw = request.scope.get("raw_path") or request.url.path.encode()
    tail = raw.decode("latin-1").split("/userdata/", 1)[1]
    segments = tail.split("/")
    if len(segments) >= 3 and segments[-2] == "move":
        groups = [segments[:-2], segments[-1:]]
    else:
        groups = [segments]
    try:
        return ["/".join(unquote(s, errors="strict") for s in group) for group in groups]
    except UnicodeDecodeError as exc:
        raise BadName(f"the file name is not UTF-8 once percent-decoded ({exc.reason} at byte {exc.start})") from None


def _requested_paths(request: Request, files: UserFiles) -> tuple[list[str], list[Path] | Response]:
    """The file names a request names (see _userdata_names) and their paths, or the 4xx answer
    refusing them."""
    try:
        names = _userdata_names(request)
    except BadName as exc:
        return [], PlainTextResponse(str(exc), status_code=400)
    paths = []
    for name in names:
        path = join_or_refuse(files.root, name)
        if isinstance(path, Response):
            return names, path
        paths.append(path)
    return names, paths


# The route parameter, declared so /openapi.json documents it; the handlers read the raw path
# instead (see _userdata_names).
NAME = FastPath(description="a file under the user folder, percent-encoded: workflows%2Fa.json")


def _file_routes(router: APIRouter, files: UserFiles) -> None:
    @router.get("/userdata/{name:path}")
    async def get_userdata(request: Request, name: str = NAME) -> Response:
        names, paths = _requested_paths(request, files)
        if isinstance(paths, Response):
            return paths
        try:
            body = await run_in_threadpool(read_whole, paths[0])
        except NotRegularFile as exc:
            return PlainTextResponse(str(exc), status_code=400)
        if body is not None:
            return Response(body, media_type=media_type(paths[0]),
                            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})
        if names[0] == "user.css":
            return empty_stylesheet()
        return PlainTextResponse(f"no user file {names[0]!r}", status_code=404)

    @router.post("/userdata/{name:path}")
    async def post_userdata(request: Request, name: str = NAME) -> Response:
        overwrite, full_info = flag(request, "overwrite", "true"), flag(request, "full_info", "false")
        names, paths = _requested_paths(request, files)
        if isinstance(paths, Response):
            return paths
        if len(paths) == 2:
            return _move(files, *paths, overwrite=overwrite, full_info=full_info, dest_name=names[1])
        path = paths[0]
        if path.is_dir():
            return PlainTextResponse(f"{names[0]!r} is a folder", status_code=400)
        if not overwrite and path.exists():
            return PlainTextResponse("file already exists", status_code=409)
        try:
            files.write(path, await request.body())
        except OSError as exc:
            return write_refused(names[0], exc)
        return files.describe(path, full_info=full_info)

    @router.delete("/userdata/{name:path}")
    async def delete_userdata(request: Request, name: str = NAME) -> Response:
        names, paths = _requested_paths(request, files)
        if isinstance(paths, Response):
            return paths
        try:
            if not paths[0].is_file():
                raise FileNotFoundError(paths[0])
            paths[0].unlink()
        except FileNotFoundError:  # never there, or deleted by a concurrent request
            return PlainTextResponse(f"no user file {names[0]!r}", status_code=404)
        return Response(status_code=204)


def _move(files: UserFiles, source: Path, dest: Path, *, overwrite: bool, full_info: bool,
          dest_name: str) -> Response:
    if not source.is_file():
        return PlainTextResponse("no such user file", status_code=404)
    if dest.is_dir():  # shutil.move would put the file inside it, under another name
        return PlainTextResponse(f"cannot store {dest_name!r}: it is a folder", status_code=409)
    if not overwrite and dest.exists():
        return PlainTextResponse("file already exists", status_code=409)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source, dest)
    except FileNotFoundError:  # moved or deleted by a concurrent request
        return PlainTextResponse("no such user file", status_code=404)
    except OSError as exc:
        return write_refused(dest_name, exc)
    return files.describe(dest, full_info=full_info)
