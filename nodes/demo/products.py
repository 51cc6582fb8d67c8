"""Procedural "product shots": a deterministic, captioned picture set for training the demo model.

Every picture is one product (``SHAPES``) in a named colour (``COLOURS``) on a plain named
background (``BACKGROUNDS``), lit from the upper left (a left-to-right brightness gradient, per-face
tones on the box), with a soft contact shadow, and jittered a little in position, scale and
brightness. The caption names the three: ``"a red bottle on a blue background"``; the object's
colour never equals the background's.

A picture is drawn once, at 4x its largest size, and reduced with a box (area) filter, so the low-
and high-resolution versions of a shot (``render_pair``) are the same picture: exactly the 32 -> 128
pairs an x4 upscaler trains on.

A fixed held-out split (``HELD_OUT_PAIRS``, ``HELD_OUT_TRIPLES``) never occurs in ``dataset_specs``;
``held_out_prompts`` gives the 40 prompts, made of those unseen combinations, that the demo's
proofs generate and judge (``nodes.demo.judge``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

RGB = tuple[int, int, int]

# sRGB; chosen far apart in Lab (and in hue) so that they stay nameable at 32 px and under shading.
COLOURS: dict[str, RGB] = {
    "red": (214, 38, 38), "orange": (245, 135, 25), "yellow": (242, 210, 30), "green": (40, 160, 60),
    "blue": (35, 85, 215), "purple": (130, 55, 180), "pink": (245, 135, 200), "white": (238, 238, 238),
}
BACKGROUNDS: dict[str, RGB] = {
    "white": (236, 236, 232), "gray": (128, 128, 128), "black": (28, 28, 30), "blue": (60, 110, 200),
    "red": (190, 45, 45), "yellow": (235, 205, 70), "green": (60, 150, 80),
}
SHAPES: tuple[str, ...] = ("mug", "bottle", "box", "shoe", "lamp")

# Never in training; every colour, shape and background still occurs elsewhere.
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "bottle"), ("blue", "lamp"), ("yellow", "shoe"), ("purple", "mug"), ("green", "box"),
)
HELD_OUT_TRIPLES: tuple[tuple[str, str, str], ...] = (
    ("red", "mug", "white"), ("red", "shoe", "black"), ("orange", "box", "blue"),
    ("orange", "lamp", "gray"), ("orange", "mug", "green"), ("yellow", "bottle", "red"),
    ("yellow", "lamp", "blue"), ("yellow", "box", "black"), ("green", "shoe", "white"),
    ("green", "lamp", "red"), ("blue", "mug", "yellow"), ("blue", "box", "white"),
    ("purple", "shoe", "gray"), ("purple", "bottle", "yellow"), ("purple", "lamp", "green"),
    ("pink", "mug", "blue"), ("pink", "bottle", "gray"), ("pink", "box", "red"),
    ("white", "bottle", "black"), ("white", "shoe", "green"),
)
PAIR_PROMPT_BACKGROUNDS = 4  # prompts per held-out pair: 5 x 4 + 20 triples = 40
SUPERSAMPLE = 4
SHADOW_DEPTH = 0.35  # the shadow's core darkens the background by this fraction


@dataclass(frozen=True)
class ProductSpec:
    colour: str
    shape: str
    background: str

    def __post_init__(self) -> None:
        problems = [f"{kind} {value!r} is not one of {sorted(names)}" for kind, value, names in (
            ("colour", self.colour, COLOURS), ("shape", self.shape, SHAPES),
            ("background", self.background, BACKGROUNDS)) if value not in names]
        if self.colour == self.background:
            problems.append(f"the object's colour equals the background's ({self.colour})")
        if problems:
            raise ValueError(f"bad product spec: {'; '.join(problems)}")

    @property
    def caption(self) -> str:
        return f"{_article(self.colour)} {self.colour} {self.shape} on {_article(self.background)} " \
               f"{self.background} background"

    @property
    def held_out(self) -> bool:
        return (self.colour, self.shape) in HELD_OUT_PAIRS or \
            (self.colour, self.shape, self.background) in HELD_OUT_TRIPLES


@dataclass(frozen=True)
class Shot:
    """One dataset picture: what it shows and the seed of its jitter."""

    spec: ProductSpec
    seed: int


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def all_specs() -> list[ProductSpec]:
    """Every valid (colour, shape, background), in a fixed order."""
    return [ProductSpec(c, s, b) for c in COLOURS for s in SHAPES for b in BACKGROUNDS if c != b]


def training_specs() -> list[ProductSpec]:
    return [spec for spec in all_specs() if not spec.held_out]


def dataset_specs(seed: int, count: int) -> list[Shot]:
    """``count`` training shots, deterministic from ``seed``: the training combinations in shuffled
    rounds (so every combination occurs ``count // len(training_specs())`` or one more times), each
    with its own jitter seed. Held-out combinations never occur."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    rng = random.Random(f"product-shots:{seed}")
    specs = training_specs()
    shots: list[Shot] = []
    while len(shots) < count:
        rng.shuffle(specs)
        shots += [Shot(spec, rng.randrange(2**31)) for spec in specs[:count - len(shots)]]
    return shots


def held_out_prompts() -> list[str]:
    """The 40 proof prompts: each held-out (colour, shape) pair on four backgrounds, and every
    held-out triple. Fixed; none of them is a caption in ``dataset_specs``."""
    prompts = []
    backgrounds = list(BACKGROUNDS)
    for index, (colour, shape) in enumerate(HELD_OUT_PAIRS):
        rotated = backgrounds[index:] + backgrounds[:index]
        chosen = [b for b in rotated if b != colour][:PAIR_PROMPT_BACKGROUNDS]
        prompts += [ProductSpec(colour, shape, b).caption for b in chosen]
    return prompts + [ProductSpec(*triple).caption for triple in HELD_OUT_TRIPLES]


def parse_caption(caption: str) -> ProductSpec:
    """The spec a caption (or prompt) of this dataset names; ValueError for any other text."""
    words = caption.strip().lower().split()
    if len(words) != 7 or words[3] != "on" or words[6] != "background":
        raise ValueError(f"not a product-shot caption ('a <colour> <shape> on a <colour> background'): {caption!r}")
    return ProductSpec(words[1], words[2], words[5])


# --- drawing ---------------------------------------------------------------------------------------

Part = tuple[Image.Image, float]  # a coverage mask ("L") and its tone (brightness factor)


class _Pen:
    """Draws in object units (the product fits in about [-0.5, 0.5]^2, y down) on a square canvas."""

    def __init__(self, side: int, cx: float, cy: float, scale: float) -> None:
        self.side, self.cx, self.cy, self.scale = side, cx, cy, scale
        self.parts: list[Part] = []

    def px(self, x: float, y: float) -> tuple[float, float]:
        return ((self.cx + x * self.scale) * self.side, (self.cy + y * self.scale) * self.side)

    def part(self, tone: float, draw: Callable[[ImageDraw.ImageDraw], None]) -> None:
        mask = Image.new("L", (self.side, self.side), 0)
        draw(ImageDraw.Draw(mask))
        self.parts.append((mask, tone))

    def box(self, x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return [*self.px(x0, y0), *self.px(x1, y1)]

    def ellipse(self, tone: float, x0: float, y0: float, x1: float, y1: float) -> None:
        self.part(tone, lambda d: d.ellipse(self.box(x0, y0, x1, y1), fill=255))

    def rect(self, tone: float, x0: float, y0: float, x1: float, y1: float, radius: float = 0.0) -> None:
        r = radius * self.scale * self.side
        self.part(tone, lambda d: d.rounded_rectangle(self.box(x0, y0, x1, y1), radius=r, fill=255))

    def polygon(self, tone: float, points: list[tuple[float, float]]) -> None:
        self.part(tone, lambda d: d.polygon([self.px(x, y) for x, y in points], fill=255))

    def ring(self, tone: float, x0: float, y0: float, x1: float, y1: float, width: float) -> None:
        w = max(1, round(width * self.scale * self.side))
        self.part(tone, lambda d: d.ellipse(self.box(x0, y0, x1, y1), outline=255, width=w))


def _mug(pen: _Pen) -> None:
    pen.ring(0.92, 0.05, -0.18, 0.42, 0.18, 0.085)
    pen.rect(1.0, -0.32, -0.26, 0.2, 0.3, radius=0.05)
    pen.ellipse(0.75, -0.32, -0.31, 0.2, -0.21)


def _bottle(pen: _Pen) -> None:
    pen.rect(1.0, -0.17, -0.1, 0.17, 0.45, radius=0.06)
    pen.polygon(1.0, [(-0.17, -0.06), (-0.06, -0.22), (0.06, -0.22), (0.17, -0.06)])
    pen.rect(1.0, -0.06, -0.36, 0.06, -0.2)
    pen.rect(0.7, -0.075, -0.45, 0.075, -0.35, radius=0.02)


def _box(pen: _Pen) -> None:
    pen.rect(1.0, -0.34, -0.12, 0.18, 0.4)
    pen.polygon(1.22, [(-0.34, -0.12), (-0.16, -0.3), (0.36, -0.3), (0.18, -0.12)])
    pen.polygon(0.72, [(0.18, -0.12), (0.36, -0.3), (0.36, 0.22), (0.18, 0.4)])


def _shoe(pen: _Pen) -> None:
    pen.polygon(1.0, [(-0.48, 0.02), (-0.26, 0.0), (-0.02, 0.1), (0.3, 0.12), (0.46, 0.2),
                      (0.48, 0.28), (-0.48, 0.28)])
    pen.rect(1.0, -0.48, -0.18, -0.22, 0.2, radius=0.04)
    pen.rect(0.65, -0.5, 0.26, 0.5, 0.34, radius=0.03)


def _lamp(pen: _Pen) -> None:
    pen.ellipse(0.8, -0.2, 0.36, 0.2, 0.46)
    pen.rect(0.9, -0.035, -0.1, 0.035, 0.42)
    pen.polygon(1.1, [(-0.14, -0.45), (0.14, -0.45), (0.32, -0.08), (-0.32, -0.08)])


DRAWERS: dict[str, Callable[[_Pen], None]] = {
    "mug": _mug, "bottle": _bottle, "box": _box, "shoe": _shoe, "lamp": _lamp,
}


def render(spec: ProductSpec, seed: int, size: int = 128) -> Image.Image:
    """The shot as a ``size`` x ``size`` RGB picture, antialiased (drawn at 4x, box-reduced).

    Deterministic in (spec, seed, size). Jitter from ``seed``: centre +-0.06 (x) / +-0.04 (y) of the
    side, scale 0.85..1.08, object brightness 0.94..1.04."""
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size}")
    rng = random.Random(f"{spec.colour}/{spec.shape}/{spec.background}/{seed}")
    side = size * SUPERSAMPLE
    scale = 0.7 * rng.uniform(0.85, 1.08)
    pen = _Pen(side, 0.5 + rng.uniform(-0.06, 0.06), 0.5 + rng.uniform(-0.04, 0.04), scale)
    DRAWERS[spec.shape](pen)
    colour = np.array(COLOURS[spec.colour], np.float32) / 255 * rng.uniform(0.94, 1.04)
    background = np.array(BACKGROUNDS[spec.background], np.float32) / 255

    canvas = np.broadcast_to(background, (side, side, 3)) * (1 - SHADOW_DEPTH * _shadow(pen))[..., None]
    # Light from the left: brightness falls across the object's width.
    x0, x1 = pen.px(-0.5, 0)[0], pen.px(0.5, 0)[0]
    light = np.clip(1.12 - 0.3 * (np.arange(side, dtype=np.float32) - x0) / (x1 - x0), 0.8, 1.12)
    for mask, tone in pen.parts:
        cover = np.asarray(mask, np.float32)[..., None] / 255
        paint = np.clip(colour * tone * light[None, :, None], 0, 1)
        canvas = canvas * (1 - cover) + paint * cover
    picture = Image.fromarray(np.round(canvas * 255).astype(np.uint8), "RGB")
    return picture.resize((size, size), Image.Resampling.BOX)


def _shadow(pen: _Pen) -> np.ndarray:
    """A blurred ellipse along the product's base, cast a little to the right; [side, side] in 0..1."""
    silhouette = np.maximum.reduce([np.asarray(mask) for mask, _ in pen.parts])
    columns, rows = np.nonzero(silhouette.any(axis=0))[0], np.nonzero(silhouette.any(axis=1))[0]
    left, right, bottom = columns[0], columns[-1], rows[-1]
    depth = 0.07 * pen.scale * pen.side
    mask = Image.new("L", (pen.side, pen.side), 0)
    ImageDraw.Draw(mask).ellipse([left - depth, bottom - depth, right + 2.5 * depth, bottom + depth], fill=255)
    blurred = mask.filter(ImageFilter.GaussianBlur(0.035 * pen.side))
    return np.asarray(blurred, np.float32) / 255


def render_pair(spec: ProductSpec, seed: int, size: int = 32, upscale: int = 4) -> tuple[Image.Image, Image.Image]:
    """The same shot at ``size`` and at ``size * upscale`` pixels: the high-resolution picture is
    rendered, and box-reduced by ``upscale`` to make the low one (so each low pixel is exactly the
    mean of its high-resolution block)."""
    if upscale < 1:
        raise ValueError(f"upscale must be >= 1, got {upscale}")
    high = render(spec, seed, size * upscale)
    return high.resize((size, size), Image.Resampling.BOX), high


def to_array(picture: Image.Image) -> np.ndarray:
    """[H, W, 3] float32 in 0..1 (the layout the judges take)."""
    return np.asarray(picture.convert("RGB"), np.float32) / 255
