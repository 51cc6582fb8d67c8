"""FID: the Fréchet Inception Distance between generated images and a reference set (Heusel et
al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", NeurIPS
2017), through torchmetrics' ``FrechetInceptionDistance`` and torch-fidelity's Inception v3.

The Inception weights are a local file under torch-fidelity's published name,
``models/inception/weights-inception-2015-12-05-6726825d.pth`` (the 2015-12-05 TensorFlow graph
the original FID code uses, converted to PyTorch; torchmetrics loads the same file). It is read
with ``weights_only`` loading (no pickled code), never downloaded. Images are resized to 299x299
as torchmetrics does: antialiased bilinear (its default, the "clean" resizing of Parmar et al.,
CVPR 2022), or TensorFlow 1.x's bilinear resize (``tensorflow``) to reproduce published numbers.
"""

from __future__ import annotations

import io
import itertools
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graph_runtime import Combo, Context, HookContext, Link, ModelFile, Node, Output
from nodes.infra.clip_scorer import to_uint8_images
from nodes.infra.files import ModelFileError, read_state_dict
from nodes.infra.model_manager import ModelManager, ModelRef, manager_from
from nodes.evaluation.rows import ROW_TYPE, EvalRow

FOLDER = "inception"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's release asset name
FEATURES = 2048  # the pool3 features of the FID definition
CHUNK = 16  # images per Inception forward pass: bounds activation memory
RESIZE = ("antialiased", "tensorflow")
PART = "inception"


class _Features(torch.nn.Module):
    """Features are the input: lets torchmetrics' FrechetInceptionDistance compute the distance of
    features already extracted (one extraction shared by every group of a sweep)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def frechet_distance(reference: torch.Tensor, generated: torch.Tensor) -> float:
    """||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)) of two feature sets [N, D] and
    [M, D] (N, M >= 2), in float64, by torchmetrics. Raises ValueError for fewer than 2 rows."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(reference) < 2 or len(generated) < 2:
        raise ValueError(f"FID needs at least 2 images in each set; got {len(reference)} reference and "
                         f"{len(generated)} generated")
    metric = FrechetInceptionDistance(feature=_Features(reference.shape[1]))
    metric.update(reference.double(), real=True)
    metric.update(generated.double(), real=False)
    return float(metric.compute())


def inception_ref(path: Path) -> ModelRef:
    """The Inception v3 of ``path`` (torch-fidelity's key layout) as a model-manager reference."""
    stat = path.stat()

    def loader() -> dict[str, torch.nn.Module]:
        from torchmetrics.image.fid import NoTrainInceptionV3

        tensors, _ = read_state_dict(path, dtype=torch.float32)
        buffer = io.BytesIO()
        torch.save(tensors, buffer)  # the checked tensors only: torch-fidelity unpickles with weights_only=False
        buffer.seek(0)
        try:
            model = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(FEATURES)],
                                       feature_extractor_weights_path=buffer)  # type: ignore[arg-type]
        except RuntimeError as exc:  # load_state_dict: missing, unexpected or mis-shaped keys
            raise ModelFileError(f"{path.name}: not torch-fidelity's Inception v3 weights ({INCEPTION_FILE} "
                                 f"layout): {str(exc).splitlines()[0]}") from exc
        return {PART: model}

    return ModelRef(("fid_inception", str(path.resolve()), stat.st_mtime_ns, stat.st_size), PART, loader, path.name)


def inception_features(manager: ModelManager, ref: ModelRef, images: list[torch.Tensor], *, resize: str,
                       progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Pool3 features [N, 2048] float64 of every image of the IMAGE batches ([B, H, W, C] float
    0..1, any size): each is quantised to uint8 and resized to 299x299 as torchmetrics does.
    ``progress`` is called with the number of images done after each forward pass."""
    chunks, done = [], 0
    with manager.use(ref) as (model,), torch.inference_mode():
        model.use_antialias = resize == "antialiased"
        device = next(model.parameters()).device
        for batch in images:
            pixels = torch.from_numpy(np.stack(to_uint8_images(batch))).permute(0, 3, 1, 2)
            for start in range(0, len(pixels), CHUNK):
                chunks.append(model(pixels[start:start + CHUNK].to(device)).double().cpu())
                done += len(chunks[-1])
                if progress is not None:
                    progress(done)
    return torch.cat(chunks)


def _missing_weights(ctx: HookContext, name: str | None) -> str | None:
    return ctx.folders.missing_weights(FOLDER, name or INCEPTION_FILE,
                                       f"FID needs torch-fidelity's Inception v3 ({INCEPTION_FILE})")


def _require_two_images(input_name: str, batches: list[torch.Tensor]) -> None:
    # checked before Inception runs: an empty list (a prompt set whose prompts name no reference
    # image) would otherwise fail deep inside as an empty torch.cat
    count = sum(len(batch) for batch in batches)
    if count < 2:
        raise ValueError(f"{input_name}: {count} image{'' if count == 1 else 's'} arrived; FID needs at least 2 in "
                         f"each set (LoadPromptSet's references holds only the prompts that name a reference)")


class FID(Node):
    category = "evaluation/metrics"
    display_name = "FID (Fréchet Inception Distance)"
    description = ("Fréchet Inception Distance between generated images and a reference set (Heusel et al. 2017; "
                   "torchmetrics with torch-fidelity's Inception v3 from models/inception/" + INCEPTION_FILE + "). "
                   "Lower is closer; 0 for identical sets. Images of any size are resized to 299x299: "
                   "antialiased, or as TensorFlow 1.x did for published numbers. With rows (one per generated "
                   "batch, as a sweep makes them), each group of rows sharing a swept value gets the FID of its "
                   "images, added to the rows as fid. Each set needs at least 2 images; FID of small sets is "
                   "biased upwards, compare only FIDs of equal set sizes.")
    input_is_list = True
    inputs = [Link("images", "IMAGE"), Link("reference", "IMAGE"),
              ModelFile("inception", FOLDER, tooltip=f"Inception v3 weights in models/{FOLDER} ({INCEPTION_FILE})"),
              Combo("resize", RESIZE, default="antialiased"),
              Link("rows", ROW_TYPE, optional=True, tooltip="the rows that made the images, one per batch")]
    outputs = [Output("FLOAT", "fid"), Output(ROW_TYPE, "rows", is_list=True)]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, inception: str | None = None, **_: Any) -> str | None:
        return _missing_weights(ctx, inception)

    def run(self, ctx: Context, *, images: list[torch.Tensor], reference: list[torch.Tensor], inception: list[str],
            resize: list[str], rows: list[EvalRow] | None = None) -> tuple[Any, ...]:
        if rows is not None and len(rows) != len(images):
            raise ValueError(f"rows: {len(rows)} rows for {len(images)} image batches; link the rows that made "
                             f"these images")
        for input_name, batches in (("images", images), ("reference", reference)):
            _require_two_images(input_name, batches)
        manager = manager_from(ctx.services)
        ref = inception_ref(ctx.folders.model_path(FOLDER, inception[0]))
        total = sum(len(batch) for batch in [*reference, *images])
        real = inception_features(manager, ref, reference, resize=resize[0],
                                  progress=lambda done: ctx.progress(done, total))
        offset = len(real)
        fake = inception_features(manager, ref, images, resize=resize[0],
                                  progress=lambda done: ctx.progress(offset + done, total))
        overall = frechet_distance(real, fake)
        if rows is None:
            return overall, []
        # the features of batch i are fake[starts[i]:starts[i + 1]]
        starts = list(itertools.accumulate((len(batch) for batch in images), initial=0))
        groups: dict[Any, list[int]] = defaultdict(list)
        for index, row in enumerate(rows):
            groups[row.value].append(index)
        scored = list(rows)
        for value, members in groups.items():
            features = torch.cat([fake[starts[i]:starts[i + 1]] for i in members])
            try:
                distance = frechet_distance(real, features)
            except ValueError as exc:
                raise ValueError(f"{rows[members[0]].sweep} = {value}: {exc}") from None
            for i in members:
                scored[i] = rows[i].with_metric("fid", distance)
        return overall, scored


NODES: list[type[Node]] = [FID]
