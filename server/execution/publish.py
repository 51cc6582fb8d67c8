"""Moving a worker's saved files into a batch's shared output folder: a local path or an fsspec URL.

A worker that publishes saves into a staging folder of its own, so two workers never race for one
name there; after each prompt every ``"type": "output"`` file its output nodes report is copied to
``TARGET/<subfolder>/<filename>`` and removed from staging. Files are created exclusively: when
another worker already published that name, a ComfyUI counter name (``prefix_00007_.png``) moves
to the next free counter and the reported entry is renamed to match, so no file is overwritten.
Names without a counter are written as given, as the local batch does.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from server.execution.outcome import RunFailure, RunOutcome, RunResult

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_COUNTER = re.compile(r"^(?P<stem>.*_)(?P<counter>\d{5,})(?P<tail>_\.[^.]+)$")
# How many counters a name may move on before publishing gives up (then the prompt fails, naming it).
MAX_RENAMES = 10_000


def is_url(location: str | Path) -> bool:
    return isinstance(location, str) and bool(_URL.match(location))


def join(target: str | Path, *parts: str) -> str:
    """``target/part/…`` as a URL (forward slashes) or a local path; empty parts are skipped."""
    parts = tuple(p.strip("/") for p in parts if p and p.strip("/"))
    if is_url(target):
        return "/".join([str(target).rstrip("/"), *parts])
    return str(Path(target).joinpath(*parts))


class Publisher:
    """Publishes the output files of a finished run from ``staging`` to ``target``.

    ``target``: a local folder (created when missing) or an fsspec URL (``s3://bucket/renders``,
    ``gs://…``, ``file:///…``; its filesystem package must be installed where the worker runs).
    Raises ``ValueError`` when the URL's protocol has no fsspec implementation installed.
    """

    def __init__(self, staging: Path, target: str | Path) -> None:
        self.staging = staging
        self.target = target
        self._fs: Any = None
        if is_url(target):
            import fsspec

            try:
                self._fs, self._root = fsspec.core.url_to_fs(str(target))
            except (ImportError, ValueError) as exc:
                raise ValueError(f"cannot write to {target!r}: {exc}") from exc
            self._fs.makedirs(self._root, exist_ok=True)
        else:
            Path(target).mkdir(parents=True, exist_ok=True)

    def publish(self, result: RunResult) -> RunResult:
        """``result`` with its output entries published (renamed where a counter moved); a file
        that cannot be published fails the run with a message naming it and the reason."""
        outputs = result.outputs
        try:
            published = {node: {key: [self._entry(item) for item in items] if isinstance(items, list) else items
                                 for key, items in ui.items()} if isinstance(ui, dict) else ui
                         for node, ui in outputs.items()}
        except OSError as exc:
            return RunFailure("internal", type(exc).__name__, f"publishing outputs to {self.target}: {exc}",
                              outputs=outputs)
        if isinstance(result, RunOutcome | RunFailure):
            return replace(result, outputs=published)
        return result

    def _entry(self, item: Any) -> Any:
        if not (isinstance(item, dict) and item.get("type") == "output" and "filename" in item):
            return item
        subfolder = str(item.get("subfolder", ""))
        source = self.staging.joinpath(subfolder, item["filename"])
        if not source.is_file():
            return item  # reported but not written here (a node that saves elsewhere)
        name = self._copy(source, subfolder, item["filename"])
        source.unlink()
        return {**item, "filename": name}

    def _copy(self, source: Path, subfolder: str, filename: str) -> str:
        name = filename
        for _ in range(MAX_RENAMES):
            try:
                self._create(source, subfolder, name)
                return name
            except FileExistsError:
                match = _COUNTER.match(name)
                if match is None:
                    self._overwrite(source, subfolder, name)
                    return name
                width = len(match["counter"])
                name = f"{match['stem']}{int(match['counter']) + 1:0{width}}{match['tail']}"
        raise FileExistsError(f"no free name for {filename!r} in {join(self.target, subfolder)}")

    def _create(self, source: Path, subfolder: str, name: str) -> None:
        if self._fs is None:
            folder = Path(self.target) / subfolder
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / name, "xb") as out, open(source, "rb") as data:
                shutil.copyfileobj(data, out)
            return
        path = join(self._root, subfolder, name)
        self._fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        # Object stores without exclusive creation: an existence check first (best effort).
        if self._fs.exists(path):
            raise FileExistsError(path)
        self._fs.put_file(os.fspath(source), path)

    def _overwrite(self, source: Path, subfolder: str, name: str) -> None:
        if self._fs is None:
            shutil.copyfile(source, Path(self.target) / subfolder / name)
        else:
            self._fs.put_file(os.fspath(source), join(self._root, subfolder, name))

    def location(self, item: dict[str, Any]) -> str:
        """Where a published entry lives: a path or a URL."""
        return join(self.target, str(item.get("subfolder", "")), str(item["filename"]))
