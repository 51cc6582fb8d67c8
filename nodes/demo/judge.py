"""Judges of a product picture against its prompt: the object's colour, the background's colour and
the product's shape, measured without the model that made the picture.

Colour: the background is the dominant named colour of the picture's border; the object is every
pixel that differs from that background (CIE Lab distance) and is not the background's own shadow
(a darkened multiple of it); its colour is the majority vote of its pixels' nearest named colours, in
Lab with lightness half-weighted so that shading does not change a name.

Shape: a small CNN (:mod:`nodes.demo.shape_classifier`) trained on fresh renders of the dataset's
own generator, with blur, noise, shifts and colour permutations so that generated pictures read
like renders. Images are ``[H, W, 3]`` (or ``[N, H, W, 3]``) float arrays or tensors in 0..1, the
layout of an IMAGE.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from skimage.color import rgb2lab

from nodes.demo.products import BACKGROUNDS, COLOURS, parse_caption
from nodes.demo.shape_classifier import ShapeClassifier, fit

LIGHTNESS_WEIGHT = 0.5  # shading moves L*; hue and chroma (a*, b*) name the colour
OBJECT_DELTA_E = 18.0  # a pixel this far (Lab) from the background belongs to the object...
SHADOW_RESIDUAL = 0.06  # ...unless it is k * background (k < 1) within this RGB distance
MIN_OBJECT_PIXELS_FRACTION = 0.005

Images = np.ndarray | torch.Tensor | Sequence[np.ndarray]


def _lab(names: dict[str, tuple[int, int, int]]) -> tuple[list[str], np.ndarray]:
    rgb = np.array(list(names.values()), np.float32)[None] / 255
    return list(names), rgb2lab(rgb)[0]


COLOUR_NAMES, COLOUR_LAB = _lab(COLOURS)
BACKGROUND_NAMES, BACKGROUND_LAB = _lab(BACKGROUNDS)


def as_batch(images: Images) -> np.ndarray:
    """``[N, H, W, 3]`` float32 in 0..1 from one image, a batch, or a list of images."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().float().numpy()
    batch = np.stack([np.asarray(i, np.float32) for i in images]) if isinstance(images, (list, tuple)) \
        else np.asarray(images, np.float32)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"images must be [H, W, 3] or [N, H, W, 3] RGB, got shape {tuple(batch.shape)}")
    return np.clip(batch, 0.0, 1.0)


def _nearest(lab: np.ndarray, palette: np.ndarray) -> np.ndarray:
    weights = np.array([LIGHTNESS_WEIGHT, 1.0, 1.0], np.float32)
    distance = (((lab[..., None, :] - palette) * weights) ** 2).sum(-1)
    return distance.argmin(-1)


def _border(image: np.ndarray) -> np.ndarray:
    width = max(1, min(image.shape[:2]) // 16)
    mask = np.zeros(image.shape[:2], bool)
    mask[:width], mask[-width:], mask[:, :width], mask[:, -width:] = True, True, True, True
    return mask


def _background(image: np.ndarray, lab: np.ndarray) -> tuple[str, np.ndarray, float]:
    """The border's dominant named colour, the median RGB of the border pixels of that name, and
    their noise (robust standard deviation per channel, MAD x 1.4826)."""
    border = _border(image)
    votes = _nearest(lab[border], BACKGROUND_LAB)
    winner = int(np.bincount(votes, minlength=len(BACKGROUND_NAMES)).argmax())
    pixels = image[border][votes == winner]
    median = np.median(pixels, axis=0)
    noise = float(np.median(np.abs(pixels - median)) * 1.4826)
    return BACKGROUND_NAMES[winner], median, noise


def object_mask(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The object of one ``[H, W, 3]`` image: ``[H, W]`` bool, the largest connected region of
    pixels that are neither the background (farther in Lab than the border's own spread) nor its
    shadow; and ``[H, W]`` float, each pixel's Lab distance from the background."""
    lab = rgb2lab(image)
    _, background, noise = _background(image, lab)
    delta = np.linalg.norm(lab - rgb2lab(background[None, None])[0, 0], axis=-1)
    threshold = max(OBJECT_DELTA_E, float(np.quantile(delta[_border(image)], 0.98)))
    k = (image @ background) / max(float(background @ background), 1e-6)
    residual = np.linalg.norm(image - k[..., None] * background, axis=-1)
    shadow = (k < 1.0) & (residual < max(SHADOW_RESIDUAL, 3 * noise))
    regions, count = ndimage.label((delta > threshold) & ~shadow)
    if count == 0:
        return np.zeros(image.shape[:2], bool), delta
    sizes = np.bincount(regions.ravel())[1:]
    return regions == 1 + int(sizes.argmax()), delta


def background_colour(image: Images) -> str:
    """The named background colour (``BACKGROUNDS``) of one ``[H, W, 3]`` image in 0..1."""
    picture = as_batch(image)[0]
    return _background(picture, rgb2lab(picture))[0]


def object_colour(image: Images) -> str | None:
    """The named object colour (``COLOURS``) of one ``[H, W, 3]`` image in 0..1: the majority name
    of the object's core (its pixels farthest from the background, so that edges blended with it do
    not vote); None when no object stands out (fewer than 0.5% of the pixels)."""
    picture = as_batch(image)[0]
    mask, delta = object_mask(picture)
    if mask.sum() < max(1, MIN_OBJECT_PIXELS_FRACTION * mask.size):
        return None
    core = mask & (delta >= np.median(delta[mask]))
    votes = _nearest(rgb2lab(picture)[core], COLOUR_LAB)
    return COLOUR_NAMES[int(np.bincount(votes, minlength=len(COLOUR_NAMES)).argmax())]


@functools.lru_cache(maxsize=4)
def default_classifier(seed: int = 0) -> ShapeClassifier:
    """``fit(seed)``, trained once per process (about a minute on two CPU cores)."""
    return fit(seed)


@dataclass(frozen=True)
class Verdict:
    prompt: str
    colour: str | None
    background: str
    shape: str
    colour_hit: bool
    background_hit: bool
    shape_hit: bool

    @property
    def hit(self) -> bool:
        return self.colour_hit and self.background_hit and self.shape_hit


@dataclass(frozen=True)
class Judgement:
    verdicts: list[Verdict]

    def _rate(self, field: str) -> float:
        return sum(getattr(v, field) for v in self.verdicts) / max(1, len(self.verdicts))

    @property
    def colour_accuracy(self) -> float:
        return self._rate("colour_hit")

    @property
    def background_accuracy(self) -> float:
        return self._rate("background_hit")

    @property
    def shape_accuracy(self) -> float:
        return self._rate("shape_hit")

    @property
    def accuracy(self) -> float:
        """Fraction of images right on all three."""
        return self._rate("hit")


def judge(images: Images, prompts: Sequence[str], classifier: ShapeClassifier | None = None) -> Judgement:
    """Judge image ``i`` against ``prompts[i]`` (captions of the product-shot form, 'a red mug on a
    blue background'). ``classifier`` defaults to ``default_classifier()``. Raises ValueError when
    the counts differ or a prompt is not of that form."""
    batch = as_batch(images)
    if len(batch) != len(prompts):
        raise ValueError(f"{len(batch)} images but {len(prompts)} prompts")
    specs = [parse_caption(p) for p in prompts]
    shapes = (classifier or default_classifier()).predict(batch)
    verdicts = []
    for picture, prompt, spec, shape in zip(batch, prompts, specs, shapes, strict=True):
        colour, background = object_colour(picture), background_colour(picture)
        verdicts.append(Verdict(prompt, colour, background, shape, colour == spec.colour,
                                background == spec.background, shape == spec.shape))
    return Judgement(verdicts)
