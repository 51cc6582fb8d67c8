"""Pasting the untouched product back over a generated image."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from graph_runtime.context import Context
from graph_runtime.node import Boolean, Int, Link, Node, Output

Tensor = torch.Tensor


def _gaussian_blur(mask: Tensor, radius: int) -> Tensor:
    """[B, 1, H, W] blurred with a Gaussian of sigma radius/2 over 2*radius+1 taps, edges replicated."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x ** 2) / (2 * (radius / 2) ** 2))
    kernel = kernel / kernel.sum()
    padded = F.pad(mask, (radius, radius, radius, radius), mode="replicate")
    return F.conv2d(F.conv2d(padded, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))


def product_composite(generated: Tensor, original: Tensor, mask: Tensor, *, feather: int = 0) -> Tensor:
    """``generated * m + original * (1 - m)`` with ``m`` the area that was generated (MASK, 1 =
    generated). ``feather`` (pixels) fades the generated area into the original on the generated
    side only (``m = min(m, blur(m))``), so wherever ``m`` is 0 the output is exactly ``original``
    (bit for bit). IMAGEs [B, H, W, C] of the same size; the mask is resized (bilinear) if needed.
    Source: EcomXL's paste-back ``out = gen * mask + fg * (1 - mask)``."""
    if generated.shape[1:3] != original.shape[1:3]:
        raise ValueError(f"generated image is {tuple(generated.shape[2:0:-1])} (w, h) but the original is "
                         f"{tuple(original.shape[2:0:-1])}: generate at the original's size (a multiple of 8)")
    if mask.ndim not in (2, 3) or 0 in mask.shape:
        raise ValueError(f"mask must be [H, W] or [B, H, W] and not empty; got {list(mask.shape)}")
    m = mask.float()
    m = m[None] if m.ndim == 2 else m
    m = m[:, None]
    if m.shape[-2:] != original.shape[1:3]:
        m = F.interpolate(m, size=tuple(original.shape[1:3]), mode="bilinear", align_corners=False)
    m = m.clamp(0, 1)
    if feather > 0:
        m = torch.minimum(m, _gaussian_blur(m, feather))  # never above m: zero stays zero
    batch = max(generated.shape[0], original.shape[0], m.shape[0])
    gen, orig, m = (t.repeat(-(-batch // t.shape[0]), *[1] * (t.ndim - 1))[:batch] for t in (generated, original, m))
    channels = min(gen.shape[-1], orig.shape[-1])
    gen, orig = gen[..., :channels], orig[..., :channels]
    weight = m.movedim(1, -1)
    blended = gen * weight + orig * (1.0 - weight)
    return torch.where(weight == 0, orig, blended)


class ProductComposite(Node):
    category = "image"
    description = ("Paste the original back over a generated image: out = generated*mask + original*(1-mask), "
                   "mask = area that was generated (set invert_mask for a product mask, 1 = product). "
                   "Where the mask is 0 the output is the original bit for bit; feather fades the seam on the "
                   "generated side only. Without feather it equals ImageCompositeMasked(destination=generated, "
                   "source=original, mask=product mask).")
    inputs = [Link("generated", "IMAGE"), Link("original", "IMAGE"), Link("mask", "MASK"),
              Boolean("invert_mask", False), Int("feather", 0, min=0, max=256, step=1, tooltip="pixels")]
    outputs = [Output("IMAGE")]

    def run(self, ctx: Context, *, generated: Tensor, original: Tensor, mask: Tensor, invert_mask: bool,
            feather: int) -> tuple[Any, ...]:
        return (product_composite(generated, original, 1.0 - mask.float() if invert_mask else mask, feather=feather),)


NODES: list[type[Node]] = [ProductComposite]
