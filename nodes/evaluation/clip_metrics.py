"""Per-image text-image metrics on a CLIP_SCORER: CLIPScore and PickScore, each adding its value to
the evaluation row of the image.

CLIP score (Hessel et al., "CLIPScore: A Reference-free Evaluation Metric for Image Captioning",
EMNLP 2021; as torchmetrics' ``CLIPScore`` computes it): 100 x max(cos(image, text), 0) of the
L2-normalised CLIP embeddings, averaged over the images. PickScore (Kirstain et al. 2023): the same
embeddings through a PickScore model, ``logit_scale.exp()`` x cos, the best-of-N scorer's own
computation (``nodes.infra.clip_scorer.scaled_similarity``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from graph_runtime import Combo, Context, HookContext, Link, Node, Output, String
from nodes.infra import clip_scorer
from nodes.infra.clip_scorer import ClipScorer, load_clip_scorer
from nodes.infra.model_manager import ModelManager, manager_from
from nodes.evaluation.rows import ROW_TYPE, EvalRow, row_or_new

FOLDER = "clip_vision"  # models/clip_vision/<name>/: a transformers CLIPModel folder with its processor
CLIP_SCORE_SCALE = 100.0  # the CLIPScore paper's w = 2.5 is for captions; 100 as torchmetrics and T2I papers


def clip_score(manager: ModelManager, scorer: ClipScorer, images: torch.Tensor, prompt: str) -> torch.Tensor:
    """CLIP score of each image ([B, H, W, C] float 0..1) for ``prompt``: [B] float32 in [0, 100]."""
    text = clip_scorer.text_embeddings(manager, scorer, [prompt])
    pictures = clip_scorer.image_embeddings(manager, scorer, images)
    return CLIP_SCORE_SCALE * (text @ pictures.T)[0].clamp(min=0)


class CLIPScoreModelLoader(Node):
    category = "loaders"
    display_name = "Load CLIP Model (for CLIP score)"
    description = ("Load a CLIP model with its processor for CLIPScore from a transformers folder in "
                   "models/clip_vision/<name>/ (config.json, weights, preprocessor and tokenizer files, as "
                   "CLIPModel.save_pretrained and CLIPProcessor.save_pretrained write them, e.g. "
                   "openai/clip-vit-large-patch14). PickScoreLoader's folders in models/scorers work too.")
    inputs = [dataclasses.replace(Combo("model_name", lambda ctx: _model_folders(ctx),
                                        tooltip="folder in models/clip_vision"), model_folder=FOLDER)]
    outputs = [Output("CLIP_SCORER")]

    @classmethod
    def fingerprint(cls, ctx: HookContext, *, model_name: str | None = None, **_: Any) -> Any:
        return clip_scorer.named_identity(ctx.folders, FOLDER, model_name)

    def run(self, ctx: Context, *, model_name: str) -> tuple[Any, ...]:
        folder = ctx.folders.model_path(FOLDER, model_name)
        return (load_clip_scorer(manager_from(ctx.services), folder, label=model_name),)


def _model_folders(ctx: HookContext) -> list[str]:
    """The transformers folders of models/clip_vision: its single files are CLIP vision towers
    (CLIPVisionLoader's), which have no text side to score against."""
    return [name for name in ctx.folders.list_models(FOLDER) if ctx.folders.model_path(FOLDER, name).is_dir()]


class _TextImageMetric(Node):
    category = "evaluation/metrics"
    inputs = [Link("scorer", "CLIP_SCORER"), Link("images", "IMAGE"), String("prompt", "", multiline=True),
              Link("row", ROW_TYPE, optional=True, tooltip="the evaluation row these images belong to")]
    outputs = [Output("FLOAT", "score"), Output(ROW_TYPE, "row")]
    # the row's column, and the per-image computation: (manager, scorer, images, prompt) -> [B] scores
    metric: ClassVar[str]
    compute: ClassVar[Callable[[ModelManager, ClipScorer, torch.Tensor, str], torch.Tensor]]

    def run(self, ctx: Context, *, scorer: ClipScorer, images: torch.Tensor, prompt: str,
            row: EvalRow | None = None) -> tuple[Any, ...]:
        score = float(type(self).compute(manager_from(ctx.services), scorer, images, prompt).mean())
        return score, row_or_new(row, prompt).with_metric(self.metric, score)


class CLIPScore(_TextImageMetric):
    display_name = "CLIP Score"
    description = ("CLIP score of images against their prompt: 100 x max(cos, 0) of the L2-normalised CLIP image and "
                   "text embeddings (Hessel et al. 2021, as torchmetrics computes it), averaged over the batch; "
                   "0..100, higher is closer. Adds clip_score to the row. Prompts are truncated to 77 tokens.")
    metric = "clip_score"
    compute = staticmethod(clip_score)


class PickScore(_TextImageMetric):
    display_name = "PickScore"
    description = ("PickScore of images against their prompt (Kirstain et al. 2023): logit_scale.exp() x cos of the "
                   "PickScore model's embeddings (about 20 for good images), averaged over the batch; the best-of-N "
                   "scorer's computation. Adds pick_score to the row. Load the model with PickScoreLoader.")
    metric = "pick_score"
    compute = staticmethod(clip_scorer.scaled_similarity)


NODES: list[type[Node]] = [CLIPScoreModelLoader, CLIPScore, PickScore]
