"""Image sets: a folder of images in, a folder of images out (LoadImageSet, SaveImageSet), and the
reading of one image file that LoadPromptSet's reference images share."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps

from graph_runtime import Combo, Context, HookContext, Int, Link, Node, Output, Result, String
from graph_runtime.folders import UnsafePath, safe_join
from nodes.core.image_io import PixelBudget, max_image_pixels
from nodes.core.imaging import pil_to_tensor, tensor_to_pil
from nodes.evaluation.rows import ROW_TYPE, EvalRow

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
MANIFEST = "rows.jsonl"  # SaveImageSet's record of which row made which file
SET_FILE_NAME = re.compile(r"\d{5,}\.png")  # SaveImageSet's file names
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L")  # convert("RGB") clips these to white


def read_image(path: Path, max_pixels: int) -> torch.Tensor:
    """An image file's first frame, upright, as RGB IMAGE [1, H, W, 3] float 0..1. Raises
    ValueError when the file is larger than ``max_pixels`` or not an image Pillow reads. 16-bit
    greyscale keeps its range, as LoadImage reads it."""
    try:
        with Image.open(path) as picture:
            PixelBudget(path, max_pixels).charge(picture)
            upright = ImageOps.exif_transpose(picture) or picture
            if upright.mode in SIXTEEN_BIT_MODES:
                return pil_to_tensor(upright).expand(-1, -1, 3).unsqueeze(0).contiguous()
            return pil_to_tensor(upright.convert("RGB")).unsqueeze(0)
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image {path.name!r}: {exc}") from exc


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _input_folders(ctx: HookContext) -> list[str]:
    root = ctx.folders.input_dir
    if root is None or not root.is_dir():
        return []
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir() and image_files(p))


def _folder(ctx: HookContext, folder: str) -> Path:
    root = ctx.folders.directory_for("input")
    path = safe_join(root, folder)
    if not path.is_dir():
        raise FileNotFoundError(f"folder {folder!r} not found in the input folder {root}")
    if not image_files(path):
        raise FileNotFoundError(f"folder {path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return path


class LoadImageSet(Node):
    category = "evaluation"
    display_name = "Load Image Set"
    description = ("Load every image file of a folder under input/ (png, jpg, webp, bmp; sorted by name), e.g. the "
                   "reference images of an FID. Outputs a list: one IMAGE [1, H, W, 3] per file (sizes may "
                   "differ), and the file names.")
    inputs = [Combo("folder", _input_folders, tooltip="a folder under input/ holding image files"),
              Int("limit", 0, min=0, max=1_000_000, tooltip="load at most this many files (0: all)")]
    outputs = [Output("IMAGE", "images", is_list=True), Output("STRING", "filenames", is_list=True),
               Output("INT", "count")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, folder: str | None = None, **_: Any) -> str | None:
        try:
            _folder(ctx, folder or "")
        except (FileNotFoundError, UnsafePath) as exc:
            return str(exc)
        return None

    @classmethod
    def fingerprint(cls, ctx: HookContext, folder: str | None = None, **_: Any) -> Any:
        try:
            return [(p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in image_files(_folder(ctx, folder or ""))]
        except (FileNotFoundError, UnsafePath):
            return None

    def run(self, ctx: Context, *, folder: str, limit: int) -> tuple[Any, ...]:
        files = image_files(_folder(ctx, folder))
        files = files[:limit] if limit else files
        budget = max_image_pixels(ctx)
        images = []
        for index, path in enumerate(files):
            ctx.progress(index, len(files))
            images.append(read_image(path, budget))
        return images, [p.name for p in files], len(files)


class SaveImageSet(Node):
    category = "evaluation"
    display_name = "Save Image Set"
    description = ("Save a list of images into one folder under output/ as NNNNN.png (every image of every batch, "
                   "numbered in order), and, when rows are given, rows.jsonl naming the prompt, swept value and "
                   "seed of each file; the set an earlier run left in the folder is replaced. LoadImageSet reads "
                   "such a folder back (copy it under input/).")
    output_node = True
    input_is_list = True
    inputs = [Link("images", "IMAGE"), String("folder", "eval/images", path_in="output"),
              Link("rows", ROW_TYPE, optional=True)]
    outputs = []

    def run(self, ctx: Context, *, images: list[torch.Tensor], folder: list[str],
            rows: list[EvalRow] | None = None) -> Result:
        if rows is not None and len(rows) != len(images):
            raise ValueError(f"rows: {len(rows)} rows for {len(images)} image batches; link the rows that made "
                             f"these images")
        subfolder = folder[0].strip().strip("/")
        target = safe_join(ctx.folders.directory_for("output"), subfolder)  # UnsafePath if it leaves output/
        target.mkdir(parents=True, exist_ok=True)
        saved, manifest, number = [], [], 0
        for batch_index, batch in enumerate(images):
            for image in batch:
                name = f"{number:05}.png"
                tensor_to_pil(image).save(target / name, compress_level=4)
                saved.append({"filename": name, "subfolder": subfolder, "type": "output"})
                if rows is not None:
                    manifest.append(json.dumps({"file": name, **rows[batch_index].record()}))
                number += 1
        if manifest:
            (target / MANIFEST).write_text("\n".join(manifest) + "\n")
        _remove_stale(target, number, keep_manifest=bool(manifest))
        return Result(ui={"images": saved})


def _remove_stale(target: Path, count: int, *, keep_manifest: bool) -> None:
    """Remove what an earlier, larger run left in ``target``: its files past ``count`` and a
    manifest this run did not write. The folder is one set: LoadImageSet would read them back into
    it (an FID set mixing two runs) and rows.jsonl would name the wrong images. Only this node's
    own names (NNNNN.png, rows.jsonl) are touched."""
    for path in target.iterdir():
        if path.is_file() and SET_FILE_NAME.fullmatch(path.name) and int(path.stem) >= count:
            path.unlink()
    if not keep_manifest:
        (target / MANIFEST).unlink(missing_ok=True)


NODES: list[type[Node]] = [LoadImageSet, SaveImageSet]
