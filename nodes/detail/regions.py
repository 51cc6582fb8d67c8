"""Crop a detected region out at working resolution, and paste a re-rendered crop back.

The two halves of a detailer as functions (``crop_region``, ``paste_region``) and as nodes
(``CropByBBox``, ``PasteByBBox``), so a graph can put any re-rendering between them (a face, a hand,
a logo); ``FaceDetailer`` composes the same functions. Conventions follow Impact-Pack's detailer:
crop box = detection box × crop_factor around its centre, moved inside the image (then clipped);
enlarged so its short side reaches guide_size, with the long side capped at max_size; resized with
Lanczos both ways; pasted through a dilated, Gaussian-feathered mask.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from graph_runtime import Context, Float, Int, Link, Node, Output

from nodes.core.imaging import as_mask_batch
from nodes.core.resizing import resize
from nodes.detail.bbox import BBOX, BBoxes, Box, boxes_to_mask, check_boxes_fit
from nodes.inputs import MAX_RESOLUTION

RESIZE_METHOD = "lanczos"


@dataclass(frozen=True)
class Crop:
    """One region at working resolution: ``image`` ``[1, h, w, C]``, ``mask`` ``[1, h, w]``, and
    ``region``, the crop's box in the source image (integer pixels, label/score of the detection)."""

    image: torch.Tensor
    mask: torch.Tensor
    region: Box


def crop_box(box: Box, crop_factor: float) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): ``box`` scaled by ``crop_factor`` around its centre, moved to lie inside the
    image where it fits, else clipped to it."""
    height, width = box.image_size
    size_x, size_y = min(box.width * crop_factor, width), min(box.height * crop_factor, height)
    x0 = min(max((box.x0 + box.x1 - size_x) / 2, 0.0), width - size_x)
    y0 = min(max((box.y0 + box.y1 - size_y) / 2, 0.0), height - size_y)
    x0_i, y0_i = int(x0), int(y0)
    return x0_i, y0_i, max(x0_i + 1, min(width, round(x0 + size_x))), max(y0_i + 1, min(height, round(y0 + size_y)))


def working_size(width: int, height: int, guide_size: int, max_size: int, multiple: int = 8) -> tuple[int, int]:
    """(w, h) to re-render a ``width``×``height`` crop at: scaled up so the short side reaches
    ``guide_size`` (never down for that), the long side capped at ``max_size``, each a multiple
    of ``multiple`` (the VAE's downscale)."""
    scale = max(1.0, guide_size / min(width, height))
    scale = min(scale, max_size / max(width, height))
    return (max(multiple, round(width * scale / multiple) * multiple),
            max(multiple, round(height * scale / multiple) * multiple))


def _resize_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    if tuple(image.shape[1:3]) == (height, width):
        return image
    return resize(image.movedim(-1, 1), width, height, RESIZE_METHOD).movedim(1, -1)


def _resize_mask(mask: torch.Tensor, width: int, height: int) -> torch.Tensor:
    if tuple(mask.shape[-2:]) == (height, width):
        return mask
    return F.interpolate(mask[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0].clamp(0, 1)


def crop_region(image: torch.Tensor, box: Box, mask: torch.Tensor | None, *, crop_factor: float, guide_size: int,
                max_size: int, multiple: int = 8) -> Crop:
    """Cut the region around ``box`` from ``image`` [B,H,W,C] (and ``mask`` [B,H,W], default the box
    itself) and enlarge it to its working size."""
    x0, y0, x1, y1 = crop_box(box, crop_factor)
    index = box.batch_index
    if mask is None:
        mask = boxes_to_mask((box,), index + 1, *box.image_size)
    mask = as_mask_batch(mask)
    if tuple(mask.shape[-2:]) != box.image_size:
        raise ValueError(f"mask: {mask.shape[-1]}x{mask.shape[-2]} does not match the image "
                         f"({box.image_size[1]}x{box.image_size[0]})")
    pixels = image[index:index + 1, y0:y1, x0:x1]
    region_mask = mask[min(index, mask.shape[0] - 1)][None, y0:y1, x0:x1].float()
    width, height = working_size(x1 - x0, y1 - y0, guide_size, max_size, multiple)
    region = replace(box, x0=float(x0), y0=float(y0), x1=float(x1), y1=float(y1))
    return Crop(_resize_image(pixels, width, height), _resize_mask(region_mask, width, height), region)


def feathered(mask: torch.Tensor, *, dilation: int, feather: int) -> torch.Tensor:
    """``mask`` [B,h,w] grown by ``dilation`` pixels (square), then blurred with a Gaussian of
    radius ``feather`` pixels (sigma = feather / 2, zero outside): 0 stays 0 farther than
    dilation + feather pixels from the mask, so nothing beyond changes."""
    out = mask[:, None].float()
    if dilation > 0:
        out = F.max_pool2d(out, 2 * dilation + 1, stride=1, padding=dilation)
    if feather > 0:
        axis = torch.arange(-feather, feather + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (axis / (feather / 2)) ** 2)
        kernel = kernel / kernel.sum()
        out = F.conv2d(out, kernel.view(1, 1, 1, -1), padding=(0, feather))
        out = F.conv2d(out, kernel.view(1, 1, -1, 1), padding=(feather, 0))
    return out[:, 0].clamp(0, 1)


def paste_region(image: torch.Tensor, source: torch.Tensor, region: Box, mask: torch.Tensor | None, *,
                 dilation: int, feather: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend ``source`` [1,h,w,C] (resized to ``region``) into ``image`` [B,H,W,C] through ``mask``
    [1,h,w] (default: all of the region) dilated and feathered. Returns the new image and the blend
    weight as a full-size MASK [B,H,W]; pixels where it is 0 are the input's, bit for bit."""
    x0, y0, x1, y1 = (int(v) for v in (region.x0, region.y0, region.x1, region.y1))
    width, height = x1 - x0, y1 - y0
    if mask is None:
        mask = torch.ones((1, height, width))
    region_mask = _resize_mask(as_mask_batch(mask).float()[:1], width, height)
    weight = feathered(region_mask, dilation=dilation, feather=feather)[0]
    pasted = _resize_image(source, width, height)[0]
    channels = min(image.shape[-1], pasted.shape[-1])
    out = image.clone()
    target = out[region.batch_index, y0:y1, x0:x1, :channels]
    w = weight[..., None]
    target.copy_(torch.where(w > 0, target * (1 - w) + pasted[..., :channels].to(out.dtype) * w, target))
    blend = torch.zeros(image.shape[:3], dtype=torch.float32)
    blend[region.batch_index, y0:y1, x0:x1] = weight
    return out, blend


class CropByBBox(Node):
    display_name = "Crop by BBox"
    category = "detail"
    description = (
        "For every box: the crop box (box × crop_factor around its centre, moved inside the image) cut out and "
        "enlarged so its short side reaches guide_size, long side at most max_size, sides multiples of 8 "
        "(Impact-Pack's defaults 3.0 / 512 / 1024). Outputs lists, one item per box: the crops IMAGE "
        "[1,h,w,C], their masks MASK [1,h,w] (the mask input cut the same way, default the box), and the crop "
        "regions (BBOX) that PasteByBBox pastes back into. Nodes between them run once per crop.")
    inputs = [Link("image", "IMAGE"), Link("bboxes", BBOX),
              Float("crop_factor", 3.0, min=1.0, max=10.0, step=0.1),
              Int("guide_size", 512, min=64, max=MAX_RESOLUTION, step=8),
              Int("max_size", 1024, min=64, max=MAX_RESOLUTION, step=8),
              Link("mask", "MASK", optional=True)]
    outputs = [Output("IMAGE", "crops", is_list=True), Output("MASK", "masks", is_list=True),
               Output(BBOX, "regions", is_list=True)]

    def run(self, ctx: Context, *, image: torch.Tensor, bboxes: BBoxes, crop_factor: float, guide_size: int,
            max_size: int, mask: torch.Tensor | None = None) -> tuple[list, list, list]:
        check_boxes_fit(bboxes, image)
        crops = [crop_region(image, box, mask, crop_factor=crop_factor, guide_size=guide_size, max_size=max_size)
                 for box in bboxes]
        return [c.image for c in crops], [c.mask for c in crops], [(c.region,) for c in crops]


def check_region_mask(mask: torch.Tensor, source: torch.Tensor, region: Box, index: int) -> None:
    """Raise ValueError unless ``mask`` has the size of its crop (CropByBBox's masks) or of its
    region: a full-image mask would otherwise be squeezed into the region and blend in the wrong place."""
    height, width = as_mask_batch(mask).shape[-2:]
    crop_size = tuple(source.shape[1:3])
    region_size = (int(region.height), int(region.width))
    if (height, width) not in (crop_size, region_size):
        raise ValueError(f"mask {index}: {width}x{height} is the size of neither its source ({crop_size[1]}x"
                         f"{crop_size[0]}) nor its region ({region_size[1]}x{region_size[0]}); connect CropByBBox's "
                         "masks output, which is cut the same way as the crops")


def _one(values: list, name: str) -> object:
    if len(values) != 1:
        raise ValueError(f"{name}: expected one value, got a list of {len(values)}")
    return values[0]


class PasteByBBox(Node):
    display_name = "Paste by BBox"
    category = "detail"
    description = (
        "Paste re-rendered crops back where CropByBBox cut them: each source IMAGE is resized to its region "
        "(Lanczos) and blended through its mask (default: the whole region) grown by dilation pixels and "
        "feathered with a Gaussian of feather pixels. Pixels the feathered mask does not reach are kept bit "
        "for bit. Also returns the blend weight as a MASK [B,H,W]. Takes the lists CropByBBox produced.")
    input_is_list = True
    inputs = [Link("image", "IMAGE"), Link("source", "IMAGE"), Link("regions", BBOX),
              Int("dilation", 4, min=0, max=256), Int("feather", 5, min=0, max=256),
              Link("mask", "MASK", optional=True)]
    outputs = [Output("IMAGE"), Output("MASK", "blend_mask")]

    def run(self, ctx: Context, *, image: list, source: list, regions: list, dilation: list, feather: list,
            mask: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        out = _one(image, "image")
        boxes = [box for group in regions for box in group]
        if len(source) != len(boxes) or (mask is not None and len(mask) != len(boxes)):
            masks = f", {len(mask)} mask(s)" if mask is not None else ""
            raise ValueError(f"PasteByBBox needs one source (and mask, when given) per region: got "
                             f"{len(source)} source(s){masks} for {len(boxes)} region(s)")
        check_boxes_fit(tuple(boxes), out, "regions")
        blend = torch.zeros(out.shape[:3])
        for index, (crop, box) in enumerate(zip(source, boxes)):
            if crop.shape[0] != 1:
                raise ValueError(f"source {index}: one image per region expected, got a batch of {crop.shape[0]}")
            if mask is not None:
                check_region_mask(mask[index], crop, box, index)
            out, weight = paste_region(out, crop, box, None if mask is None else mask[index],
                                       dilation=_one(dilation, "dilation"), feather=_one(feather, "feather"))
            blend = torch.maximum(blend, weight)
        return out, blend


NODES: list[type[Node]] = [CropByBBox, PasteByBBox]
