"""A training run's folder under ``output/training/``: its identity, state, checkpoints and lock.

Layout of ``output/training/<run_name>-<hash>/``::

    run.json                     what the run was started with (the identity the hash is made of)
    state.json                   status (running | interrupted | failed | finished), step, total,
                                 loss history, and the outputs a finished run wrote
    checkpoints/step-000040/     trainable.safetensors + state.pt (optimizer, lr scheduler, grad
                                 scaler, RNG states, loss history); the newest ``keep`` are kept
    previews/                    step-000040.png (sample | loss curve), loss.png
    lock                         held (flock) while a process trains in this folder

Every file is written to a temporary name and renamed into place (a checkpoint folder as a
whole), so a process killed at any instant leaves either the previous checkpoint or the new one,
never half of one. The hash is made of the run's inputs (:func:`identity`), so running the same
node again with the same inputs finds its folder and resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

TRAINING_SUBFOLDER = "training"
_CHECKPOINT = re.compile(r"^step-(\d{6,})$")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


class RunFolderBusy(RuntimeError):
    """Another process is training in this run folder."""


def identity(value: Any) -> Any:
    """A JSON-able token that changes whenever ``value`` would train differently: primitives as
    they are, tensors by a hash of their bytes, dataclasses field by field (callables skipped:
    loaders are not what a run is made of), objects with an ``identity()`` method by its result."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous()
        digest = hashlib.blake2b(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"", digest_size=8)
        return {"tensor": [list(data.shape), str(data.dtype), digest.hexdigest()]}
    if hasattr(value, "identity") and callable(value.identity):
        return identity(value.identity())
    if isinstance(value, Mapping):
        return {str(k): identity(v) for k, v in sorted(value.items(), key=lambda item: str(item[0]))}
    if isinstance(value, (list, tuple)):
        return [identity(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.dtype):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__type__": type(value).__name__,
                **{f.name: identity(getattr(value, f.name)) for f in dataclasses.fields(value)
                   if not callable(getattr(value, f.name))}}
    raise TypeError(f"cannot derive a run identity from a {type(value).__name__}; "
                    f"give it an identity() method")


def run_hash(inputs: Mapping[str, Any]) -> str:
    text = json.dumps(identity(dict(inputs)), sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def safe_run_name(name: str) -> str:
    cleaned = _SAFE_NAME.sub("_", name.strip()).strip("._")
    return cleaned[:60] or "run"


def training_root(output_dir: Path) -> Path:
    return Path(output_dir) / TRAINING_SUBFOLDER


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def file_stamp(path: str | Path) -> list[int] | None:
    """Size and modification time of ``path``, None when it is gone. A finished run records the
    stamps of the files it wrote: another run with the same run_name (other inputs) writes the
    same file names, and its files must not pass for this run's."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class RunFolder:
    """One run folder. ``open`` creates it (or finds it) and takes its lock for the run."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_handle: Any = None

    @classmethod
    def for_inputs(cls, output_dir: Path, run_name: str, inputs: Mapping[str, Any]) -> RunFolder:
        """The folder of a run of ``inputs``: ``output/training/<run_name>-<hash of inputs>``."""
        return cls(training_root(output_dir) / f"{safe_run_name(run_name)}-{run_hash(inputs)}")

    # -- lifetime ------------------------------------------------------------------------------

    def open(self, description: Mapping[str, Any]) -> RunFolder:
        """Create the folder (writing ``run.json`` once) and lock it; RunFolderBusy when another
        process holds it. Leftovers of a killed writer (``.tmp`` names) are removed."""
        import fcntl

        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        (self.path / "previews").mkdir(exist_ok=True)
        handle = open(self.path / "lock", "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise RunFolderBusy(f"run folder {self.path} is in use by another training process") from exc
        self._lock_handle = handle
        for leftover in list(self.path.rglob(".*.tmp-*")) + list((self.path / "checkpoints").glob(".tmp-*")):
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
        if not (self.path / "run.json").exists():
            _write_atomic(self.path / "run.json", json.dumps(identity(dict(description)), indent=1).encode())
        return self

    def close(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    # -- state -----------------------------------------------------------------------------------

    def state(self) -> dict[str, Any] | None:
        return read_json(self.path / "state.json")

    def write_state(self, **state: Any) -> None:
        _write_atomic(self.path / "state.json", json.dumps(state, indent=1).encode())

    def finished_outputs(self) -> dict[str, Any] | None:
        """The outputs a finished run recorded, when every file it names still exists as this run
        wrote it (not removed, not overwritten by another run)."""
        state = self.state()
        if not state or state.get("status") != "finished":
            return None
        outputs = state.get("outputs") or {}
        stamps = [file_stamp(p) for p in state.get("files", [])]
        if None in stamps:
            return None
        if "file_stamps" in state and stamps != state["file_stamps"]:
            return None
        return outputs

    # -- checkpoints -----------------------------------------------------------------------------

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints, oldest first."""
        found = []
        for child in (self.path / "checkpoints").glob("step-*"):
            match = _CHECKPOINT.match(child.name)
            if match and (child / "state.pt").is_file() and (child / "trainable.safetensors").is_file():
                found.append((int(match.group(1)), child))
        return sorted(found)

    def latest_checkpoint(self) -> tuple[int, Path] | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def save_checkpoint(self, step: int, weights: Mapping[str, torch.Tensor], state: Mapping[str, Any],
                        *, keep: int) -> Path:
        """Write ``weights`` (safetensors) and ``state`` (torch.save) as checkpoint ``step``
        atomically, then drop all but the newest ``keep`` checkpoints."""
        from safetensors.torch import save_file

        final = self.path / "checkpoints" / f"step-{step:06d}"
        tmp = self.path / "checkpoints" / f".tmp-step-{step:06d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp / "trainable.safetensors"))
        torch.save(dict(state), tmp / "state.pt")
        for name in ("trainable.safetensors", "state.pt"):
            with open(tmp / name, "rb") as handle:
                os.fsync(handle.fileno())
        if final.exists():  # the same step written again (a re-run that trained nothing new)
            shutil.rmtree(final)
        os.rename(tmp, final)
        for _, old in self.checkpoints()[:-max(keep, 1)]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        from safetensors.torch import load_file

        return load_file(str(path / "trainable.safetensors")), torch.load(path / "state.pt", weights_only=True)

    def write_file(self, relative: str, data: bytes) -> Path:
        path = self.path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, data)
        return path


def folder_fingerprint(output_dir: Path, run_name: str | None, resume_from: str | None = None) -> Any:
    """What the output cache keys a training node on besides its inputs: the status, step and
    output files of the run folders it may use (every ``<run_name>-*`` folder, and
    ``resume_from``). An unfinished, removed or further-trained run changes it, so the cache never
    hands back a result its folder no longer backs."""
    root = training_root(output_dir)
    pattern = f"{safe_run_name(run_name)}-*" if run_name else "*"
    folders = sorted(root.glob(pattern)) if root.is_dir() else []
    if resume_from:
        folders.append(root / resume_from)
    summary = []
    for folder in folders:
        state = read_json(folder / "state.json") or {}
        files = [(p, file_stamp(p)) for p in state.get("files", [])]
        summary.append((folder.name, state.get("status"), state.get("step"), files))
    return summary
