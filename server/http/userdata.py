"""The editor's per-user file store: ``/users``, ``/settings``, ``/userdata`` and ``/v2/userdata``.

Per-user data lives in ``<user_dir>/default`` as in ComfyUI's single-user mode. Every name a
request supplies goes through ``safe_join`` before it touches disk.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request
from fastapi import Path as FastPath
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from graph_runtime.folders import UnsafePath, safe_join
from server.http.frontend_http import (empty_stylesheet, flag, join_or_refuse, json_body, media_type, read_json_file,
                                  refused)

USER = "default"
SETTINGS_FILE = "comfy.settings.json"


class UserFiles:
    """One user's folder: settings, workflows, keybindings, blueprints, anything the editor saves."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def relative(self, path: Path, relative_to: Path | None = None) -> str:
        return path.relative_to((relative_to or self.root).resolve()).as_posix()

    def info(self, path: Path, relative_to: Path | None = None) -> dict[str, Any]:
        stat = path.stat()
        return {"path": self.relative(path, relative_to), "size": stat.st_size, "modified": stat.st_mtime,
                "created": stat.st_ctime}

    def describe(self, path: Path, *, full_info: bool) -> Response:
        """What a write or a move answers: the stored file's path, or its info with full_info."""
        return JSONResponse(self.info(path) if full_info else self.relative(path))

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
        """Whether ``path`` (found under the resolved folder) still lies strictly inside it once
        links are followed, and its name is UTF-8: the same checks ``safe_join`` makes for names
        a request supplies, so a listing never holds a name no JSON answer can encode."""
        root = self.root.resolve()
        try:
            return safe_join(root, self.relative(path)) != root
        except ValueError:
            return False

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
        # Logged as an error: the next save would replace the unreadable file.
        loaded = read_json_file(self.root / SETTINGS_FILE, level=logging.ERROR)
        return loaded if isinstance(loaded, dict) else {}

    def save_settings(self, values: dict[str, Any]) -> Response | None:
        """Store ``values``; the 4xx answer when they cannot be (see _write_refused), else None."""
        try:
            # A body the parser just accepted can still be too deep for the indenting encoder.
            text = json.dumps(values, indent=4)
        except RecursionError:
            return PlainTextResponse("settings are nested too deeply to store", status_code=400)
        try:
            self.write(self.root / SETTINGS_FILE, text.encode("utf-8"))
        except OSError as exc:
            return _write_refused(SETTINGS_FILE, exc)
        return None

    def v2_entries(self, directory: Path) -> list[dict[str, Any]]:
        """Everything under ``directory``, folders first, as ``GET /v2/userdata`` lists it."""
        entries = []
        for path in sorted(directory.resolve().rglob("*")):
            if not self.inside(path):
                continue
            entry: dict[str, Any] = {"name": path.name, "path": self.relative(path),
                                     "type": "directory" if path.is_dir() else "file"}
            if path.is_file():
                stat = path.stat()
                entry.update(size=stat.st_size, modified=stat.st_mtime)
            entries.append(entry)
        entries.sort(key=lambda e: (e["type"] != "directory", e["name"].lower()))
        return entries


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


class NotRegularFile(OSError):
    """A user path naming a FIFO, socket or device: reading one could block forever."""


def _read_whole(path: Path) -> bytes | None:
    """The file's bytes read through one open descriptor, or None when it is gone. A delete or
    an atomic rewrite racing the read leaves this descriptor on the old content: the answer is
    the whole old file or a 404, never a body cut off at a size stat-ed before. Raises
    NotRegularFile for anything but a regular file."""
    # O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer that never comes; the
    # descriptor's own fstat then decides, so a swap after the check cannot slip a FIFO in.
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):  # checked on the raw descriptor: wrapping one of a folder fails
        os.close(fd)
        if stat.S_ISDIR(mode):  # a folder is no user file: the 404 it always was
            return None
        raise NotRegularFile(f"{path.name!r} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def _write_refused(name: str, exc: OSError) -> Response:
    """The 4xx answer for a write or move the file system refused: a user file standing where a
    folder is needed (``a.json/b.json`` after ``a.json``), a folder where a file is, or another
    OS reason (a name too long, a read-only disk)."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        return PlainTextResponse(f"cannot store {name!r}: a part of its folder path is a file", status_code=409)
    if isinstance(exc, IsADirectoryError):
        return PlainTextResponse(f"cannot store {name!r}: it is a folder", status_code=409)
    return PlainTextResponse(f"cannot store {name!r}: {exc.strerror or exc}", status_code=400)


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
            body = await run_in_threadpool(_read_whole, paths[0])
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
            return _write_refused(names[0], exc)
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
        return _write_refused(dest_name, exc)
    return files.describe(dest, full_info=full_info)
