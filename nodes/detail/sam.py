"""segment-anything: SAMLoader (models/sams) and SAMSegmentBoxes (a box prompt per detection -> MASK).

Kirillov et al., "Segment Anything" (arXiv 2304.02643), through the ``segment_anything`` package's
``sam_model_registry`` and ``SamPredictor``. The published checkpoints (sam_vit_b_01ec64.pth,
sam_vit_l_0b3195.pth, sam_vit_h_4b8939.pth, or .safetensors conversions) are recognised from their
tensors: image-encoder width 768/1024/1280 and depth 12/24/32. A file carrying its own architecture
in the ``nodeloom_config`` metadata entry (the tiny zoo's tiny-sam.safetensors) is built to it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graph_runtime import Context, Float, HookContext, Link, ModelFile, Node, Output

from nodes.detail.bbox import BBOX, BBoxes, boxes_to_mask, check_boxes_fit
from nodes.detail.detect import file_fingerprint, to_uint8
from nodes.diffusion.loading import file_group
from nodes.infra.files import METADATA_KEY, ModelFileError, empty_weights, read_state_dict
from nodes.infra.model_manager import LoadPolicy, ModelManager, ModelRef, manager_from

log = logging.getLogger(__name__)

SAM_MODEL = "SAM_MODEL"
SAM_DESCRIPTION = "a segment-anything model (image encoder, prompt encoder, mask decoder)"
SAMS_FOLDER = "sams"
# (image-encoder width, depth) of the published checkpoints, as segment_anything builds them.
VARIANTS: dict[tuple[int, int], str] = {(768, 12): "vit_b", (1024, 24): "vit_l", (1280, 32): "vit_h"}
# SamPredictor feeds float32 pixels; fp32 everywhere also keeps the IoU scores comparable.
SAM_POLICY = LoadPolicy(dtype=torch.float32, compile=False)
_BLOCK = re.compile(r"image_encoder\.blocks\.(\d+)\.")


def sam_variant(shapes: Mapping[str, Any], name: str) -> str:
    """"vit_b" | "vit_l" | "vit_h" from a state dict's keys and shapes (tensors or meta tensors);
    ModelFileError naming the file and what was found otherwise."""
    patch = shapes.get("image_encoder.patch_embed.proj.weight")
    if patch is None:
        raise ModelFileError(f"{name} is not a segment-anything checkpoint (no image_encoder.patch_embed weights; "
                             "SAM-HQ, MobileSAM and SAM 2 files are not supported)")
    depth = len({int(m.group(1)) for key in shapes if (m := _BLOCK.match(key))})
    width = int(patch.shape[0])
    if (width, depth) not in VARIANTS:
        known = ", ".join(f"{v} ({w} wide, {d} blocks)" for (w, d), v in VARIANTS.items())
        raise ModelFileError(f"{name}: a SAM image encoder {width} wide with {depth} blocks matches none of {known}")
    return VARIANTS[(width, depth)]


def metadata_config(metadata: Mapping[str, str], name: str) -> dict[str, Any] | None:
    """The SAM architecture a file carries in its ``nodeloom_config`` metadata (None without one).
    The entry is the file's text, not ours: ModelFileError naming the file when it is not JSON."""
    if METADATA_KEY not in metadata:
        return None
    try:
        spec = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{name}: its {METADATA_KEY} metadata is not valid JSON ({exc})") from exc
    config = spec.get("sam") if isinstance(spec, dict) else None
    if config is not None and not isinstance(config, dict):
        raise ModelFileError(f"{name}: the 'sam' entry of its {METADATA_KEY} metadata is not a JSON object")
    return config


def build_from_config(config: dict[str, Any], name: str) -> torch.nn.Module:
    """``build_sam`` of a metadata config; a missing or mistyped field is the file's fault, so the
    error names the file instead of surfacing as a bare KeyError from the builder."""
    from nodes.diffusion.zoo import build_sam

    try:
        return build_sam(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{name}: its {METADATA_KEY} metadata does not describe a SAM "
                             f"({type(exc).__name__}: {exc})") from exc


def shape_mismatches(module: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """``key (file shape) vs (model shape)`` for every tensor of ``state`` the module holds in another shape."""
    own = module.state_dict()
    return [f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}" for key, value in state.items()
            if key in own and own[key].shape != value.shape]


def load_sam(path: Path) -> torch.nn.Module:
    """Build and load a ``segment_anything.modeling.Sam`` from a file (weights-only reading)."""
    from segment_anything import sam_model_registry

    state, metadata = read_state_dict(path)
    config = metadata_config(metadata, path.name)
    with empty_weights():
        if config:
            module = build_from_config(config, path.name)
        else:
            module = sam_model_registry[sam_variant(state, path.name)]()
    mismatched = shape_mismatches(module, state)
    if mismatched:  # load_state_dict would raise a page-long RuntimeError that does not name the file
        raise ModelFileError(f"{path.name}: the weights do not fit the SAM architecture ({len(mismatched)} tensor(s) "
                             f"of another shape: {', '.join(mismatched[:3])})")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    result = module.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ModelFileError(f"{path.name}: the weights do not fit the SAM architecture (missing "
                             f"{sorted(result.missing_keys)[:5]}, unexpected {sorted(result.unexpected_keys)[:5]})")
    return module.eval()


@dataclass(frozen=True, eq=False)
class SamModel:
    """SAM_MODEL: a reference to a SAM in the model manager, and which one it is."""

    ref: ModelRef
    variant: str

    @contextlib.contextmanager
    def use(self, manager: ModelManager) -> Iterator[torch.nn.Module]:
        with manager.use(self.ref) as (sam,):
            yield sam


def sam_model(manager: ModelManager, path: Path, label: str) -> SamModel:
    """Load (once per file version) and describe the SAM in ``path``."""
    ref = ModelRef(file_group("sam", path), "sam", lambda: {"sam": load_sam(path)}, label, policy=SAM_POLICY)
    sam = manager.ensure_loaded(ref)
    width = sam.image_encoder.patch_embed.proj.weight.shape[0]
    variant = VARIANTS.get((width, len(sam.image_encoder.blocks)), f"custom ({width} wide)")
    return SamModel(ref, variant)


class SAMLoader(Node):
    category = "detail"
    description = ("Load a segment-anything model from models/sams: the published vit_b / vit_l / vit_h "
                   "checkpoints (sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth, sam_vit_h_4b8939.pth, read weights-only, "
                   "or .safetensors), recognised from their tensors, or the tiny zoo's tiny-sam.safetensors. Kept "
                   "in float32 by the shared model manager.")
    inputs = [ModelFile("model_name", SAMS_FOLDER)]
    outputs = [Output(SAM_MODEL)]

    @classmethod
    def fingerprint(cls, ctx: HookContext, *, model_name: str | None = None, **_: Any) -> Any:
        return file_fingerprint(ctx, SAMS_FOLDER, model_name)

    def run(self, ctx: Context, *, model_name: str) -> tuple[SamModel]:
        path = ctx.folders.model_path(SAMS_FOLDER, model_name)
        return (sam_model(manager_from(ctx.services), path, model_name),)


Report = Callable[[int, int, "str | None"], None]


def segment_boxes(sam: torch.nn.Module, image: torch.Tensor, boxes: BBoxes, threshold: float,
                  report: Report | None = None) -> tuple[torch.Tensor, list[float]]:
    """MASK ``[B, H, W]`` (0/1 float): per box, SAM's single mask for the box prompt when its
    predicted IoU score reaches ``threshold``, else the box itself. Returns the scores too.
    ``report(done, total, note)`` follows each box; ``note`` says when the box was used instead."""
    from segment_anything import SamPredictor

    batch, height, width = image.shape[0], image.shape[1], image.shape[2]
    mask = torch.zeros((batch, height, width), dtype=torch.float32)
    predictor = SamPredictor(sam)
    scores: list[float] = []
    for index in range(batch):
        own = [box for box in boxes if box.batch_index == index]
        if not own:
            continue
        predictor.set_image(to_uint8(image[index]), image_format="RGB")
        for box in own:
            masks, predicted, _ = predictor.predict(box=np.array([box.x0, box.y0, box.x1, box.y1]),
                                                    multimask_output=False)
            score = float(predicted[0])
            scores.append(score)
            note = None
            if score >= threshold:
                mask[index] = torch.maximum(mask[index], torch.from_numpy(masks[0].astype(np.float32)))
            else:
                mask[index] = torch.maximum(mask[index], boxes_to_mask((box,), batch, height, width)[index])
                note = f"box at ({box.x0:.0f}, {box.y0:.0f}): SAM score {score:.3f} < {threshold}, box used"
            if report is not None:
                report(len(scores), len(boxes), note)
    return mask, scores


class SAMSegmentBoxes(Node):
    display_name = "SAM Segment Boxes"
    category = "detail"
    description = ("Segment each detected box with segment-anything: the box is the prompt, one mask per box "
                   "(multimask_output=False). A mask whose predicted IoU score is under threshold is replaced by "
                   "the box itself (the box is a safe region; a poor mask is not). 0.93 is Impact-Pack's SAM "
                   "threshold. Returns the union per image: MASK [B,H,W], float 0/1.")
    inputs = [Link("sam_model", SAM_MODEL), Link("image", "IMAGE"), Link("bboxes", BBOX),
              Float("threshold", 0.93, min=0.0, max=1.0, step=0.01)]
    outputs = [Output("MASK")]

    def run(self, ctx: Context, *, sam_model: SamModel, image: torch.Tensor, bboxes: BBoxes,
            threshold: float) -> tuple[torch.Tensor]:
        check_boxes_fit(bboxes, image)

        def report(done: int, total: int, note: str | None) -> None:
            if note:
                log.info("node %s: %s", ctx.node_id, note)
            ctx.progress(done, total, text=note)

        with sam_model.use(manager_from(ctx.services)) as sam:
            mask, _ = segment_boxes(sam, image, bboxes, threshold, report)
        return (mask,)


NODES: list[type[Node]] = [SAMLoader, SAMSegmentBoxes]
