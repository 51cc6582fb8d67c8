"""The per-user file store behind the ``/userdata`` and ``/settings`` routes: where files live,
how they are written atomically and read whole, and what they look like in listings."""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from fastapi.responses import JSONResponse, PlainTextResponse, Response

from graph_runtime.folders import safe_join
from server.http.frontend_http import read_json_file

log = logging.getLogger(__name__)

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
        """Store ``values``; the 4xx answer when they cannot be (see write_refused), else None."""
        try:
            # A body the parser just accepted can still be too deep for the indenting encoder.
            text = json.dumps(values, indent=4)
        except RecursionError:
            return PlainTextResponse("settings are nested too deeply to store", status_code=400)
        try:
            self.write(self.root / SETTINGS_FILE, text.encode("utf-8"))
        except OSError as exc:
            return write_refused(SETTINGS_FILE, exc)
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


class NotRegularFile(OSError):
    """A user path naming a FIFO, socket or device: reading one could block forever."""


def read_whole(path: Path) -> bytes | None:
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


def write_refused(name: str, exc: OSError) -> Response:
    """The 4xx answer for a write or move the file system refused: a user file standing where a
    folder is needed (``a.json/b.json`` after ``a.json``), a folder where a file is, or another
    OS reason (a name too long, a read-only disk)."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        return PlainTextResponse(f"cannot store {name!r}: a part of its folder path is a file", status_code=409)
    if isinstance(exc, IsADirectoryError):
        return PlainTextResponse(f"cannot store {name!r}: it is a folder", status_code=409)
    return PlainTextResponse(f"cannot store {name!r}: {exc.strerror or exc}", status_code=400)
