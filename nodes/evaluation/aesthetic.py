"""AestheticScore: the LAION improved aesthetic predictor (C. Schuhmann,
github.com/christophschuhmann/improved-aesthetic-predictor): a linear MLP (768 -> 1024 -> 128 ->
64 -> 16 -> 1, dropouts between, no activations) on the L2-normalised CLIP ViT-L/14 image embedding,
trained to predict the 1..10 ratings of the SAC, LAION-Logos and AVA sets.

The predictor is a local file under its published name, ``models/aesthetic/sac+logos+ava1-l14-
linearMSE.pth`` (or ``ava+logos-l14-linearMSE.pth``); the CLIP is a CLIP_SCORER of ViT-L/14
(``openai/clip-vit-large-patch14`` saved with transformers, loaded by CLIPScoreModelLoader). The
predictor's input width must equal the CLIP's embedding width.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from graph_runtime import Context, HookContext, Link, ModelFile, Node, Output
from nodes.infra import clip_scorer
from nodes.infra.clip_scorer import ClipScorer
from nodes.infra.files import ModelFileError, read_state_dict
from nodes.infra.model_manager import ModelRef, manager_from
from nodes.evaluation.rows import ROW_TYPE, EvalRow, row_or_new

FOLDER = "aesthetic"
PREDICTOR_FILE = "sac+logos+ava1-l14-linearMSE.pth"
HIDDEN = (1024, 128, 64, 16)
DROPOUTS = (0.2, 0.2, 0.1)
LINEAR_INDICES = (0, 2, 4, 6, 7)  # the nn.Sequential positions of the Linear layers in the published file
PART = "predictor"


def build_predictor(embedding_dim: int) -> torch.nn.Sequential:
    """The published MLP for embeddings of width ``embedding_dim`` (768 for ViT-L/14)."""
    widths = (embedding_dim, *HIDDEN)
    layers: list[torch.nn.Module] = []
    for index, (width_in, width_out) in enumerate(zip(widths, widths[1:])):
        layers.append(torch.nn.Linear(width_in, width_out))
        if index < len(DROPOUTS):
            layers.append(torch.nn.Dropout(DROPOUTS[index]))
    layers.append(torch.nn.Linear(HIDDEN[-1], 1))
    return torch.nn.Sequential(*layers)


def predictor_ref(path: Path) -> ModelRef:
    stat = path.stat()

    def loader() -> dict[str, torch.nn.Module]:
        tensors, _ = read_state_dict(path, dtype=torch.float32)
        # the published file holds the Sequential's keys (layers.N.*); a bare Sequential's (N.*) too
        tensors = {k.removeprefix("layers."): v for k, v in tensors.items()}
        first = tensors.get("0.weight")
        if first is None or first.ndim != 2:
            raise ModelFileError(f"{path.name}: not an improved-aesthetic-predictor MLP (no layers.0.weight; "
                                 f"keys: {sorted(tensors)[:6]})")
        model = build_predictor(int(first.shape[1]))
        try:
            model.load_state_dict(tensors)
        except RuntimeError as exc:
            raise ModelFileError(f"{path.name}: not the linear improved-aesthetic-predictor MLP (Linear layers at "
                                 f"{LINEAR_INDICES}): {str(exc).splitlines()[0]}") from exc
        return {PART: model}

    return ModelRef(("aesthetic_predictor", str(path.resolve()), stat.st_mtime_ns, stat.st_size), PART, loader,
                    path.name)


def aesthetic_scores(ctx: Context, scorer: ClipScorer, predictor: Path, images: torch.Tensor) -> torch.Tensor:
    """Predicted rating (about 1..10) of each image ([B, H, W, C] float 0..1): [B] float32. Raises
    ValueError when the predictor's input width differs from the CLIP's embedding width."""
    manager = manager_from(ctx.services)
    embeddings = clip_scorer.image_embeddings(manager, scorer, images)
    ref = predictor_ref(predictor)
    with manager.use(ref) as (model,), torch.inference_mode():
        expected = model[0].in_features
        if embeddings.shape[1] != expected:
            raise ValueError(f"predictor {predictor.name} takes {expected}-wide CLIP embeddings but {scorer.name} "
                             f"gives {embeddings.shape[1]}-wide ones; use the CLIP it was trained on (ViT-L/14: 768)")
        return model(embeddings.to(model[0].weight.device))[:, 0].float().cpu()


class AestheticScore(Node):
    category = "evaluation/metrics"
    display_name = "Aesthetic Score (LAION predictor)"
    description = ("Aesthetic rating of images (about 1..10, higher is better) by the LAION improved aesthetic predictor "
                   "on CLIP ViT-L/14 image embeddings, averaged over the batch. The predictor file goes in "
                   f"models/{FOLDER}/ under its published name ({PREDICTOR_FILE}); the CLIP comes from "
                   "CLIPScoreModelLoader. Adds aesthetic_score to the row.")
    inputs = [Link("scorer", "CLIP_SCORER"), Link("images", "IMAGE"),
              ModelFile("predictor", FOLDER, tooltip=f"the MLP's .pth in models/{FOLDER} ({PREDICTOR_FILE})"),
              Link("row", ROW_TYPE, optional=True)]
    outputs = [Output("FLOAT", "score"), Output(ROW_TYPE, "row")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, predictor: str | None = None, **_: Any) -> str | None:
        what = f"AestheticScore needs the LAION improved aesthetic predictor ({PREDICTOR_FILE})"
        return ctx.folders.missing_weights(FOLDER, predictor or PREDICTOR_FILE, what)

    def run(self, ctx: Context, *, scorer: ClipScorer, images: torch.Tensor, predictor: str,
            row: EvalRow | None = None) -> tuple[Any, ...]:
        score = float(aesthetic_scores(ctx, scorer, ctx.folders.model_path(FOLDER, predictor), images).mean())
        return score, row_or_new(row, "").with_metric("aesthetic_score", score)


NODES: list[type[Node]] = [AestheticScore]
