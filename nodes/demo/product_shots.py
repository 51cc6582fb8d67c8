"""ProductShots: the procedural product-shot set (:mod:`nodes.demo.products`) written to input/ and
served as the two DATASETs the demo trains on.

``input/<folder>/`` holds the pictures at ``resolution`` and ``input/<folder>_hr/`` the same pictures
at ``resolution * upscale``, each folder in the Hugging Face ``imagefolder`` layout (``00000.png`` ...
and ``metadata.jsonl`` with ``file_name``/``text``), so LoadImageCaptionDataset reads them too. A
``product_shots.json`` stamp, written last, records what a folder holds (one marked partial while
it renders): a run with the same inputs finds it and every listed file, and renders nothing. A folder without the stamp is somebody else's
and is never written into.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from graph_runtime import Float, Int, Node, Output, String
from graph_runtime.context import Context, HookContext
from graph_runtime.folders import UnsafePath, safe_join
from nodes.demo.products import Shot, dataset_specs, render_pair
from nodes.training.dataset import ImageCaptionDataset, load_dataset

STAMP = "product_shots.json"
RENDERER_VERSION = 1  # bump when the pictures change, so written folders are rendered again
MAX_SIDE = 2048


def stamp_for(*, seed: int, count: int, size: int) -> dict[str, Any]:
    return {"generator": "ProductShots", "version": RENDERER_VERSION, "seed": seed, "count": count, "size": size}


def file_name(index: int) -> str:
    return f"{index:05d}.png"


def read_stamp(folder: Path) -> dict[str, Any] | None:
    try:
        stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def is_complete(folder: Path, stamp: dict[str, Any]) -> bool:
    return read_stamp(folder) == stamp and all((folder / file_name(i)).is_file() for i in range(stamp["count"]))


def foreign_folder_problem(folder: Path) -> str | None:
    """Why ``folder`` may not be written: it has files but no stamp of ours."""
    if folder.exists() and not folder.is_dir():
        return f"{folder} exists and is not a folder"
    if folder.is_dir() and any(folder.iterdir()) and read_stamp(folder) is None:
        return f"{folder} already holds files not written by ProductShots (no {STAMP}); choose another folder name"
    return None


def clear_previous(folder: Path) -> None:
    """Remove the pictures and stamp an earlier ProductShots run wrote (other files stay). The stamp
    goes last, so a run killed while clearing leaves a folder still marked as ours."""
    previous = read_stamp(folder)
    if previous is None:
        return
    for index in range(int(previous.get("count", 0))):
        (folder / file_name(index)).unlink(missing_ok=True)
    (folder / STAMP).unlink(missing_ok=True)


def claim(folder: Path, stamp: dict[str, Any]) -> None:
    """Mark ``folder`` as being rendered for ``stamp`` before its first picture is written: a run
    killed or interrupted midway leaves a folder the next run clears and renders again (the
    partial stamp never equals a finished one), not one refused as somebody else's."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STAMP).write_text(json.dumps({**stamp, "partial": True}) + "\n", encoding="utf-8")


def write_folders(ctx: Context, shots: list[Shot], low: Path, high: Path, *, size: int, upscale: int,
                  seed: int) -> None:
    """Render ``shots`` into ``low`` (``size`` px) and ``high`` (``size * upscale`` px), reporting
    progress; a folder already complete for these inputs is left alone."""
    stamps = {low: stamp_for(seed=seed, count=len(shots), size=size),
              high: stamp_for(seed=seed, count=len(shots), size=size * upscale)}
    if all(is_complete(folder, stamp) for folder, stamp in stamps.items()):
        return
    for folder, stamp in stamps.items():
        clear_previous(folder)
        claim(folder, stamp)
    for index, shot in enumerate(shots):
        small, large = render_pair(shot.spec, shot.seed, size, upscale)
        small.save(low / file_name(index))
        large.save(high / file_name(index))
        ctx.progress(index + 1, len(shots))
    metadata = "".join(json.dumps({"file_name": file_name(i), "text": shot.spec.caption}) + "\n"
                       for i, shot in enumerate(shots))
    for folder, stamp in stamps.items():
        (folder / "metadata.jsonl").write_text(metadata, encoding="utf-8")
        (folder / STAMP).write_text(json.dumps(stamp) + "\n", encoding="utf-8")


class ProductShots(Node):
    category = "demo"
    description = ("Render the procedural product-shot set (5 products x 8 colours x 7 backgrounds, captions like "
                   "'a red mug on a blue background'; the demo's held-out combinations never occur) into "
                   "input/<folder>/ and, the same pictures upscale times larger, input/<folder>_hr/, then load both "
                   "as DATASETs (centre crop, no flip, no buckets). Deterministic from the seed; a folder already "
                   "written with the same inputs is reused without rendering.")
    inputs = [
        Int("seed", 0, min=0, max=2**31 - 1, tooltip="picks the shots and their position/scale jitter"),
        Int("count", 2000, min=1, max=200_000, tooltip="number of pictures (the 204 training combinations in "
            "shuffled rounds)"),
        Int("resolution", 32, min=8, max=512, step=8, tooltip="side of the low-resolution pictures in pixels"),
        Int("upscale", 4, min=1, max=8, tooltip="the high-resolution pictures are this many times larger"),
        String("folder", "product_shots", tooltip="folder name under input/ (the large pictures go to <folder>_hr)"),
        Float("caption_dropout", 0.0, min=0.0, max=1.0, step=0.01, optional=True,
              tooltip="probability that the low-resolution DATASET serves an empty caption (classifier-free "
              "guidance training; 0.1 in the demo recipe)"),
    ]
    outputs = [Output("DATASET", "dataset", tooltip="the pictures at resolution, with captions"),
               Output("DATASET", "dataset_hr", tooltip="the same pictures at resolution x upscale, with captions")]

    @classmethod
    def _folders(cls, ctx: HookContext, folder: str) -> tuple[Path, Path]:
        if not folder.strip() or "/" in folder:
            raise UnsafePath(f"folder must be a single folder name under input/, got {folder!r}")
        root = ctx.folders.directory_for("input")
        return safe_join(root, folder), safe_join(root, f"{folder}_hr")

    @classmethod
    def fingerprint(cls, ctx: HookContext, *, folder: str | None = None, **_: Any) -> Any:
        try:
            return [read_stamp(path) for path in cls._folders(ctx, folder or "")]
        except ValueError:
            return None

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        resolution, upscale = widgets.get("resolution"), widgets.get("upscale")
        if resolution is not None and upscale is not None and resolution * upscale > MAX_SIDE:
            return f"resolution x upscale must be at most {MAX_SIDE} pixels, got {resolution} x {upscale}"
        if widgets.get("folder") is None:
            return None
        try:
            folders = cls._folders(ctx, widgets["folder"])
        except ValueError as exc:
            return str(exc)
        return next(filter(None, map(foreign_folder_problem, folders)), None)

    def run(self, ctx: Context, *, seed: int, count: int, resolution: int, upscale: int, folder: str,
            caption_dropout: float | None = None) -> tuple[ImageCaptionDataset, ImageCaptionDataset]:
        low, high = self._folders(ctx, folder)
        if problem := next(filter(None, map(foreign_folder_problem, (low, high))), None):
            raise ValueError(problem)
        write_folders(ctx, dataset_specs(seed, count), low, high, size=resolution, upscale=upscale, seed=seed)
        options = dict(crop="center", flip=False, aspect_buckets=False, caption_template="{caption}")
        return (load_dataset(low, resolution=resolution, caption_dropout=caption_dropout or 0.0, **options),
                load_dataset(high, resolution=resolution * upscale, caption_dropout=0.0, **options))


NODES: list[type[Node]] = [ProductShots]
