"""Soft-edge control images: HED and PiDiNet through controlnet_aux, and a dependency-free Sobel one.

Inputs follow controlnet_aux's detectors: ``detect_resolution`` (the short side the network sees),
``image_resolution`` (the short side of the output; both rounded to multiples of 64 as
controlnet_aux's ``resize_image`` does) and ``safe`` (controlnet_aux's ``safe_step``: edges
quantised to 0, 0.5 and 1, the "hedsafe"/"pidisafe" variants the soft-edge ControlNets were also
trained on). Weights are read from models/annotators under their published names.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from graph_runtime.context import Context, HookContext
from graph_runtime.node import Boolean, Float, Int, Link, Node, Output

from nodes.infra import annotators
from nodes.infra.model_manager import LoadPolicy, ModelRef, manager_from

Tensor = torch.Tensor
FOLDER = "annotators"
# Annotators run in float32 whatever the manager's compute dtype: controlnet_aux feeds them float32.
ANNOTATOR_POLICY = LoadPolicy(dtype=torch.float32, compile=False)


def _resolutions() -> list[Any]:
    return [Int("detect_resolution", 512, min=64, max=4096, step=64), Int("image_resolution", 512, min=64, max=4096, step=64),
            Boolean("safe", False, tooltip="quantise the edges (hedsafe / pidisafe)")]


def output_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """controlnet_aux's resize_image: short side to ``resolution``, both sides rounded to 64."""
    k = resolution / min(height, width)
    return max(64, int(np.round(height * k / 64.0)) * 64), max(64, int(np.round(width * k / 64.0)) * 64)


def _to_uint8(image: Tensor) -> list[np.ndarray]:
    rgb = image[..., :3] if image.shape[-1] >= 3 else image[..., :1].repeat(1, 1, 1, 3)
    return [(frame.clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy() for frame in rgb]


class _Annotator(Node):
    """A controlnet_aux detector over a network file in models/annotators."""

    category = "image/preprocessors"
    file_name = ""  # the published weights file in models/annotators
    detector_class = ""  # the controlnet_aux class that runs the network
    load: ClassVar[Callable[[Path], torch.nn.Module]]  # its builder in nodes.infra.annotators
    inputs = [Link("image", "IMAGE"), *_resolutions()]
    outputs = [Output("IMAGE")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        return ctx.folders.missing_weights(FOLDER, cls.file_name, f"{cls.__name__} needs its weights")

    @classmethod
    def fingerprint(cls, ctx: HookContext, **_: Any) -> Any:
        try:
            stat = ctx.folders.model_path(FOLDER, cls.file_name).stat()
        except (OSError, ValueError):
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def run(self, ctx: Context, *, image: Tensor, detect_resolution: int, image_resolution: int,
            safe: bool) -> tuple[Any, ...]:
        path = ctx.folders.model_path(FOLDER, self.file_name)
        stat = path.stat()
        ref = ModelRef((FOLDER, str(path.resolve()), stat.st_mtime_ns, stat.st_size), "annotator",
                       lambda: {"annotator": self.load(path)}, self.file_name, policy=ANNOTATOR_POLICY)
        frames = []
        with manager_from(ctx.services).use(ref) as (net,):
            import controlnet_aux

            detect = getattr(controlnet_aux, self.detector_class)(net)
            for index, frame in enumerate(_to_uint8(image)):
                edges = detect(frame, detect_resolution=detect_resolution, image_resolution=image_resolution,
                               safe=safe, output_type="np")
                frames.append(torch.from_numpy(np.ascontiguousarray(edges)).float() / 255.0)
                ctx.progress(index + 1, image.shape[0])
        return (torch.stack(frames),)


class HEDPreprocessor(_Annotator):
    description = ("Soft edges by HED (controlnet_aux HEDdetector, the ControlNet 1.1 Apache-2 HED; "
                   "Xie & Tu, ICCV 2015). Needs models/annotators/ControlNetHED.pth. Output: IMAGE, "
                   "white edges on black, short side image_resolution.")
    file_name = annotators.HED_FILE
    detector_class = "HEDdetector"
    load = staticmethod(annotators.load_hed)


class PiDiNetPreprocessor(_Annotator):
    description = ("Soft edges by PiDiNet (controlnet_aux PidiNetDetector; Su et al., ICCV 2021, "
                   "table5_pidinet). Needs models/annotators/table5_pidinet.pth. Output: IMAGE, white "
                   "edges on black, short side image_resolution.")
    file_name = annotators.PIDINET_FILE
    detector_class = "PidiNetDetector"
    load = staticmethod(annotators.load_pidinet)


def sobel_soft_edges(image: Tensor, *, blur_sigma: float, detect_hw: tuple[int, int],
                     out_hw: tuple[int, int], safe: bool) -> Tensor:
    """IMAGE [B, H, W, C] 0..1 -> soft edges [B, h, w, 3] 0..1: luminance at ``detect_hw``, Gaussian
    blur (``blur_sigma`` pixels; 0 = none), Sobel gradient magnitude scaled by its per-image
    maximum, resized to ``out_hw``; ``safe`` quantises as controlnet_aux's safe_step."""
    rgb = image[..., :3] if image.shape[-1] >= 3 else image[..., :1].repeat(1, 1, 1, 3)
    gray = (rgb.float() * torch.tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True).movedim(-1, 1)
    gray = F.interpolate(gray, size=detect_hw, mode="bilinear", align_corners=False, antialias=True)
    if blur_sigma > 0:
        radius = max(1, int(3 * blur_sigma + 0.5))
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-(x ** 2) / (2 * blur_sigma ** 2))
        kernel = kernel / kernel.sum()
        gray = F.pad(gray, (radius, radius, radius, radius), mode="replicate")
        gray = F.conv2d(F.conv2d(gray, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    padded = F.pad(gray, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, sobel.view(1, 1, 3, 3))
    gy = F.conv2d(padded, sobel.t().contiguous().view(1, 1, 3, 3))
    magnitude = torch.sqrt(gx * gx + gy * gy)
    magnitude = magnitude / magnitude.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    if safe:
        magnitude = torch.floor(magnitude * 3.0) / 2.0  # safe_step(x, step=2)
    edges = F.interpolate(magnitude, size=out_hw, mode="bilinear", align_corners=False).clamp(0, 1)
    return edges.movedim(1, -1).repeat(1, 1, 1, 3)


class SoftEdgeSobel(Node):
    category = "image/preprocessors"
    description = ("Soft edges without a network or a weights file: Gaussian blur then Sobel gradient "
                   "magnitude, scaled to 0..1 per image. Same resolution rules as HED/PiDiNet.")
    inputs = [Link("image", "IMAGE"), *_resolutions(),
              Float("blur_sigma", 1.0, min=0.0, max=16.0, step=0.1, tooltip="Gaussian blur before Sobel, pixels")]
    outputs = [Output("IMAGE")]

    def run(self, ctx: Context, *, image: Tensor, detect_resolution: int, image_resolution: int, safe: bool,
            blur_sigma: float) -> tuple[Any, ...]:
        height, width = image.shape[1:3]
        return (sobel_soft_edges(image, blur_sigma=blur_sigma, detect_hw=output_size(height, width, detect_resolution),
                                 out_hw=output_size(height, width, image_resolution), safe=safe),)


NODES: list[type[Node]] = [HEDPreprocessor, PiDiNetPreprocessor, SoftEdgeSobel]
