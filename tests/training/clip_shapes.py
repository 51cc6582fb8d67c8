"""Coloured shapes on grey, captioned ("a red circle"), for the TrainCLIP tests: a training folder
and held-out renders of the same captions at other places and sizes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 190, 40), "blue": (40, 60, 230), "yellow": (235, 220, 40),
           "purple": (150, 40, 190), "white": (250, 250, 250)}
SHAPES = ("square", "circle")
CAPTIONS = [f"a {colour} {shape}" for colour in COLOURS for shape in SHAPES]


def render(caption: str, rng: random.Random, size: int = 32) -> Image.Image:
    _, colour, shape = caption.split()
    image = Image.new("RGB", (size, size), (110, 110, 110))
    side = rng.randint(size // 3, size * 2 // 3)
    left, top = rng.randint(0, size - side), rng.randint(0, size - side)
    box = [left, top, left + side - 1, top + side - 1]
    draw = ImageDraw.Draw(image)
    (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=COLOURS[colour])
    return image


def write_shapes(folder: Path, per_caption: int, seed: int = 0) -> Path:
    """``per_caption`` renders of every caption as an imagefolder (metadata.jsonl)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(per_caption):
        for number, caption in enumerate(CAPTIONS):
            name = f"{number:02d}_{index:03d}.png"
            render(caption, rng).save(folder / name)
            lines.append(json.dumps({"file_name": name, "text": caption}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def held_out_images(seed: int = 1234) -> torch.Tensor:
    """IMAGE [len(CAPTIONS), 32, 32, 3] 0..1: one new render per caption, in CAPTIONS order."""
    rng = random.Random(seed)
    arrays = [np.asarray(render(caption, rng), dtype=np.float32) / 255 for caption in CAPTIONS]
    return torch.from_numpy(np.stack(arrays))
