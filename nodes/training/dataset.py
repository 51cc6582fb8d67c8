"""LoadImageCaptionDataset: a folder of captioned images as a DATASET to train on.

Two layouts, as people ship them: the Hugging Face ``imagefolder`` one (``metadata.jsonl`` with one
``{"file_name": ..., "text": ...}`` line per image; ``caption`` is accepted for ``text``) and
kohya's sidecar captions (``photo.png`` + ``photo.txt``). Every image is opened and every caption
read at validation, so a broken set is refused before anything trains, naming the file. With
``captions`` "none" the folder is a plain folder of images (what TrainESRGAN needs): captions are
neither required nor read, and every sample's caption is empty.

Sampling (``ImageCaptionDataset.sample``) resizes each image to cover its bucket, crops (centre or
random), flips at random when asked, fills ``caption_template`` and drops the caption with
``caption_dropout`` probability; all randomness comes from the generator passed in, so a step's
batch is reproducible. Aspect-ratio buckets follow kohya's: sides in steps of 64 (8 below 256 px)
with about ``resolution``² pixels, each image in the bucket nearest its aspect ratio.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps

from graph_runtime import Boolean, Combo, Float, Int, Node, Output, String
from graph_runtime.context import Context, HookContext
from graph_runtime.folders import safe_join
from nodes.core.imaging import pil_to_tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_ASPECT = 4.0
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L")
EXIF_ORIENTATION = 0x0112
TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
CAPTION_MODES = ("required", "none")


@dataclass(frozen=True)
class Item:
    path: Path
    caption: str
    width: int
    height: int
    bucket: tuple[int, int]  # (width, height) it is trained at


@dataclass(frozen=True)
class ImageCaptionDataset:
    """DATASET: captioned images and how to serve them. ``sample`` gives ``[B, 3, H, W]`` float32
    pixels in -1..1 (one bucket per batch) and ``B`` captions."""

    items: tuple[Item, ...]
    resolution: int
    random_crop: bool
    flip: bool
    caption_template: str
    caption_dropout: float
    _pixels: dict[Path, torch.Tensor] = field(default_factory=dict, compare=False, repr=False)

    def identity(self) -> Any:
        return {"items": [(i.path.name, i.path.stat().st_mtime_ns, i.path.stat().st_size, i.caption, i.bucket)
                          for i in self.items],
                "options": [self.resolution, self.random_crop, self.flip, self.caption_template, self.caption_dropout]}

    def __len__(self) -> int:
        return len(self.items)

    def buckets(self) -> dict[tuple[int, int], list[int]]:
        found: dict[tuple[int, int], list[int]] = {}
        for index, item in enumerate(self.items):
            found.setdefault(item.bucket, []).append(index)
        return found

    @property
    def fixed_pixels(self) -> bool:
        """True when an item always gives the same pixels (no random crop, no flip), so a trainer
        may encode each item once and reuse it."""
        return not self.random_crop and not self.flip

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        _, pixels, captions = self.sample_indexed(batch_size, generator)
        assert pixels is not None
        return pixels, captions

    def sample_indexed(self, batch_size: int, generator: torch.Generator, *, pixels: bool = True
                       ) -> tuple[list[int], torch.Tensor | None, list[str]]:
        """(item indices, ``[B, 3, H, W]`` pixels or None, captions). ``pixels`` False skips the
        crops (only allowed when :attr:`fixed_pixels`; the generator advances exactly as with them)."""
        if not pixels and not self.fixed_pixels:
            raise ValueError("pixels can be skipped only without random crops and flips")
        buckets = list(self.buckets().values())
        sizes = torch.tensor([len(b) for b in buckets], dtype=torch.float)
        members = buckets[int(torch.multinomial(sizes, 1, generator=generator))]
        picks = torch.randint(0, len(members), (batch_size,), generator=generator).tolist()
        indices, crops, captions = [], [], []
        for pick in picks:
            indices.append(members[pick])
            item = self.items[members[pick]]
            if pixels:
                crops.append(self._crop(item, generator))
            dropped = float(torch.rand((), generator=generator)) < self.caption_dropout
            captions.append("" if dropped else self.caption_template.replace("{caption}", item.caption))
        return indices, torch.stack(crops) if pixels else None, captions

    def item_pixels(self, index: int) -> torch.Tensor:
        """``[3, H, W]`` in -1..1: item ``index`` as a :attr:`fixed_pixels` dataset serves it."""
        if not self.fixed_pixels:
            raise ValueError("an item's pixels are fixed only without random crops and flips")
        return self._crop(self.items[index], torch.Generator())

    def _crop(self, item: Item, generator: torch.Generator) -> torch.Tensor:
        width, height = item.bucket
        resized = self._pixels.get(item.path)
        if resized is None:  # decoded and scaled to cover its bucket once; crops and flips vary
            image = trim_to_aspect(read_pixels(item.path), width / height)
            scale = max(width / image.shape[2], height / image.shape[1])
            size = (max(height, round(image.shape[1] * scale)), max(width, round(image.shape[2] * scale)))
            resized = torch.nn.functional.interpolate(image[None], size=size, mode="bicubic", antialias=True,
                                                      align_corners=False)[0].clamp(0, 1)
            self._pixels[item.path] = resized
        spare_y, spare_x = resized.shape[1] - height, resized.shape[2] - width
        if self.random_crop:
            top = int(torch.randint(0, spare_y + 1, (), generator=generator))
            left = int(torch.randint(0, spare_x + 1, (), generator=generator))
        else:
            top, left = spare_y // 2, spare_x // 2
        crop = resized[:, top:top + height, left:left + width]
        if self.flip and float(torch.rand((), generator=generator)) < 0.5:
            crop = crop.flip(-1)
        return (crop * 2 - 1).float()


def read_pixels(path: Path) -> torch.Tensor:
    """``[3, H, W]`` in 0..1, upright (EXIF orientation applied, as LoadImage): phone photographs
    are stored sideways. 16-bit greyscale keeps its range (``convert("RGB")`` clips it to white)."""
    with Image.open(path) as picture:
        upright = ImageOps.exif_transpose(picture) or picture
        if upright.mode in SIXTEEN_BIT_MODES:
            return pil_to_tensor(upright).expand(-1, -1, 3).permute(2, 0, 1).contiguous()
        return pil_to_tensor(upright.convert("RGB")).permute(2, 0, 1)


def upright_size(picture: Image.Image) -> tuple[int, int]:
    """(width, height) as the image is shown, for its bucket, without decoding the pixels."""
    width, height = picture.size
    if picture.getexif().get(EXIF_ORIENTATION) in TRANSPOSED_ORIENTATIONS:
        return height, width
    return width, height


def read_text(path: Path) -> str:
    """A caption file's text; UTF-8 (a byte-order mark, as Windows editors write, is dropped).
    ValueError naming the file for anything else, so the caption is not silently garbled."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path.name}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                         f"save it as UTF-8") from exc


def trim_to_aspect(image: torch.Tensor, aspect: float, slack: float = 2.0) -> torch.Tensor:
    """``image`` ``[3, H, W]`` centre-cut to at most ``slack`` times the target ``aspect`` (width /
    height) in either direction. Scaling a 2×4000 strip to cover a square would make it 128000 px
    long; everything outside the cut is cropped away anyway, and ``slack`` leaves random crops room."""
    height, width = image.shape[1:]
    if width / height > aspect * slack:
        keep = max(1, round(height * aspect * slack))
        return image[:, :, (width - keep) // 2:(width - keep) // 2 + keep]
    if height / width > slack / aspect:
        keep = max(1, round(width * slack / aspect))
        return image[:, (height - keep) // 2:(height - keep) // 2 + keep, :]
    return image


def bucket_sizes(resolution: int) -> list[tuple[int, int]]:
    """(width, height) pairs: sides multiples of 64 (8 below 256), area at most resolution²,
    aspect at most 4:1."""
    step = 64 if resolution >= 256 else 8
    area = resolution * resolution
    sizes = {(resolution // step * step,) * 2}
    for width in range(step, 4 * resolution + 1, step):
        height = area // width // step * step
        if height >= step and max(width, height) / min(width, height) <= MAX_ASPECT:
            sizes.add((width, height))
    return sorted(sizes)


def nearest_bucket(width: int, height: int, sizes: list[tuple[int, int]]) -> tuple[int, int]:
    ratio = math.log(width / height)
    return min(sizes, key=lambda s: (abs(math.log(s[0] / s[1]) - ratio), -s[0] * s[1]))


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_captions(folder: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """(image path, caption) pairs of ``folder`` and the problems found, each naming the file."""
    problems: list[str] = []
    images = image_files(folder)
    metadata = folder / "metadata.jsonl"
    captions: dict[str, str] = {}
    lines: list[str] = []
    if metadata.is_file():
        try:
            lines = read_text(metadata).splitlines()
        except ValueError as exc:
            problems.append(str(exc))
    names = {image.name for image in images}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name, text = row["file_name"], row.get("text", row.get("caption"))
        except (ValueError, KeyError, TypeError, AttributeError):
            problems.append(f"metadata.jsonl line {number}: not a JSON object with file_name and text")
            continue
        if not isinstance(text, str):
            problems.append(f"metadata.jsonl line {number} ({name}): no text caption")
            continue
        if str(name) not in names:  # a missing file, or one in a subfolder, or not an image
            problems.append(f"metadata.jsonl line {number}: {name} is not an image in the folder "
                            f"({', '.join(IMAGE_SUFFIXES)}, no subfolders)")
        captions[str(name)] = text
    pairs = []
    for image in images:
        sidecar = image.with_suffix(".txt")
        if image.name in captions:
            pairs.append((image, captions[image.name].strip()))
        elif sidecar.is_file():
            try:
                pairs.append((image, read_text(sidecar).strip()))
            except ValueError as exc:
                problems.append(str(exc))
        else:
            where = "a line in metadata.jsonl" if metadata.is_file() else f"{sidecar.name}"
            problems.append(f"{image.name}: no caption (expected {where})")
    stems = {image.stem for image in images}
    for caption in [] if metadata.is_file() else sorted(folder.glob("*.txt")):
        if caption.stem not in stems:  # kohya layout: its image is missing or in a format not read
            problems.append(f"{caption.name}: a caption without an image ({', '.join(IMAGE_SUFFIXES)})")
    if not images:
        problems.append(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return pairs, problems


def dataset_folders(ctx: HookContext) -> list[str]:
    root = ctx.folders.directory_for("input")
    if not root.is_dir():
        return []
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir()
                  and ((p / "metadata.jsonl").is_file() or any(p.glob("*.txt")) or image_files(p)))


def load_dataset(folder: Path, *, resolution: int, crop: str, flip: bool, aspect_buckets: bool,
                 caption_template: str, caption_dropout: float, captions: str = "required") -> ImageCaptionDataset:
    """Raises ValueError listing every unreadable image and missing caption (``captions``
    "required"), or every unreadable image and an empty folder (``captions`` "none": no caption is
    read, each is empty)."""
    if captions not in CAPTION_MODES:
        raise ValueError(f"captions must be one of {list(CAPTION_MODES)}, got {captions!r}")
    if captions == "none":
        images = image_files(folder)
        pairs = [(path, "") for path in images]
        problems = [] if images else [f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}"]
    else:
        pairs, problems = read_captions(folder)
        if any(": no caption" in p for p in problems):
            problems.append("for images without captions (e.g. an upscaler's HR images) set captions to 'none'")
    sizes = bucket_sizes(resolution) if aspect_buckets else [(resolution, resolution)]
    items = []
    for path, caption in pairs:
        try:
            with Image.open(path) as picture:
                picture.verify()
            with Image.open(path) as picture:
                width, height = upright_size(picture)
        except Exception as exc:  # noqa: BLE001 - any decoder error means the same to the user
            problems.append(f"{path.name}: unreadable image ({type(exc).__name__}: {exc})")
            continue
        items.append(Item(path, caption, width, height, nearest_bucket(width, height, sizes)))
    if problems:
        raise ValueError(f"dataset {folder.name}: " + "; ".join(problems))
    return ImageCaptionDataset(tuple(items), resolution, crop == "random", flip, caption_template, caption_dropout)


class LoadImageCaptionDataset(Node):
    category = "training"
    description = ("Captioned images from a folder under input/ (Hugging Face imagefolder metadata.jsonl, or kohya "
                   "sidecar .txt captions) as a DATASET, with resolution, crop, flip, aspect-ratio buckets, a "
                   "caption template and caption dropout. A broken image or a missing caption is a validation "
                   "error naming the file. captions 'none' takes a plain folder of images (upscaler training).")
    inputs = [
        Combo("folder", dataset_folders, tooltip="a folder in input/ with images and their captions"),
        Int("resolution", 512, min=16, max=4096, step=8, tooltip="side of the square training size in pixels "
            "(the area of each bucket; 32 for a pixel-family model)"),
        Combo("crop", ["center", "random"], default="center"),
        Boolean("flip", False, tooltip="flip images horizontally at random (half of the time)"),
        Boolean("aspect_buckets", False, tooltip="train each image near its own aspect ratio (kohya buckets) "
                "instead of a square crop"),
        String("caption_template", "{caption}", tooltip="the caption trained on; {caption} is the file's "
               "caption, e.g. 'thumbnail style, {caption}'"),
        Float("caption_dropout", 0.0, min=0.0, max=1.0, step=0.01, tooltip="probability of training a sample "
              "with an empty caption"),
        Combo("captions", list(CAPTION_MODES), default="required", optional=True,
              tooltip="required: every image needs a caption; none: a plain folder of images, captions neither "
              "needed nor read (for TrainESRGAN)"),
    ]
    outputs = [Output("DATASET")]

    @classmethod
    def _path(cls, ctx: HookContext, folder: str) -> Path:
        return safe_join(ctx.folders.directory_for("input"), folder)

    @classmethod
    def fingerprint(cls, ctx: HookContext, *, folder: str | None = None, **_: Any) -> Any:
        try:
            path = cls._path(ctx, folder or "")
            return [(p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(path.iterdir())]
        except (OSError, ValueError):
            return None

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        template = widgets.get("caption_template")
        captions = widgets.get("captions") or "required"
        if template is not None and "{caption}" not in template and captions == "required":
            return f"caption_template must contain {{caption}} (the file's caption), got {template!r}"
        folder = widgets.get("folder")
        if folder is None:
            return None
        try:
            load_dataset(cls._path(ctx, folder), resolution=int(widgets.get("resolution") or 512), crop="center",
                         flip=False, aspect_buckets=bool(widgets.get("aspect_buckets")), caption_template="{caption}",
                         caption_dropout=0.0, captions=captions)
        except (OSError, ValueError) as exc:
            return str(exc)
        return None

    def run(self, ctx: Context, *, folder: str, resolution: int, crop: str, flip: bool, aspect_buckets: bool,
            caption_template: str, caption_dropout: float, captions: str | None = None) -> tuple[ImageCaptionDataset]:
        return (load_dataset(self._path(ctx, folder), resolution=resolution, crop=crop, flip=flip,
                             aspect_buckets=aspect_buckets, caption_template=caption_template,
                             caption_dropout=caption_dropout, captions=captions or "required"),)


NODES: list[type[Node]] = [LoadImageCaptionDataset]
