"""PickScoreLoader and PickScoreRank: best-of-N selection with a preference model.

PickScore (Kirstain et al., "Pick-a-Pic: An Open Dataset of User Preferences for Text-to-Image
Generation", NeurIPS 2023; model ``yuvalkirstain/PickScore_v1``, processor of
``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``) is a CLIP-H fine-tuned on human preferences. Its
published scoring, reproduced here: image and text features, each L2-normalised; scores =
``logit_scale.exp() * text @ images.T``; probabilities = softmax of the scores over the
candidates. Any CLIPModel folder scores the same way (plain CLIP gives 100 x cosine similarity).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from graph_runtime.context import Context, HookContext
from graph_runtime.node import Combo, Int, Link, Node, Output, String

from nodes.infra import clip_scorer
from nodes.infra.clip_scorer import ClipScorer, load_clip_scorer
from nodes.infra.model_manager import ModelManager, manager_from

TIE_DECIMALS = 4  # PickScores are ~20 (100 x cosine): 1e-4 is far below any real preference
FOLDER = "scorers"  # models/scorers/<name>/: a CLIPModel and its processor, transformers format


@dataclass(frozen=True)
class Ranking:
    """Candidates best first: ``order[i]`` is the original index of the i-th best; ``scores`` and
    ``probabilities`` follow the same order."""

    order: list[int]
    scores: list[float]
    probabilities: list[float]


def rank(scores: torch.Tensor) -> Ranking:
    """Sort [N] scores descending. Scores equal to ``TIE_DECIMALS`` decimals are a tie, kept in
    their original order: identical images at different batch positions differ by float noise
    (~1e-6), which must not decide the ranking."""
    probabilities = torch.softmax(scores, dim=-1)
    values = scores.tolist()
    order = sorted(range(len(values)), key=lambda i: (-round(values[i], TIE_DECIMALS), i))
    return Ranking(order=order, scores=[values[i] for i in order],
                   probabilities=[float(probabilities[i]) for i in order])


def pickscore(manager: ModelManager, scorer: ClipScorer, images: torch.Tensor, prompt: str) -> torch.Tensor:
    """PickScore of each image ([B, H, W, C] float 0..1) for ``prompt``: [B] float32."""
    return clip_scorer.scaled_similarity(manager, scorer, images, prompt)


def _scorer_choices(ctx: HookContext) -> list[str]:
    """Folders in models/scorers holding a config.json: the runtime's own listing, so the server
    validates against the same choices."""
    return ctx.folders.list_models(FOLDER)


class PickScoreLoader(Node):
    category = "loaders"
    display_name = "Load PickScore Model"
    description = ("Load a CLIP preference scorer (PickScore_v1 or any CLIPModel) with its processor from a "
                   "transformers folder in models/scorers/<name>/ (config.json, weights, preprocessor and "
                   "tokenizer files).")
    inputs = [dataclasses.replace(Combo("model_name", _scorer_choices, tooltip="folder in models/scorers"),
                                  model_folder=FOLDER)]
    outputs = [Output("CLIP_SCORER")]

    @classmethod
    def fingerprint(cls, ctx: HookContext, *, model_name: str | None = None, **_: Any) -> Any:
        return clip_scorer.named_identity(ctx.folders, FOLDER, model_name)

    def run(self, ctx: Context, *, model_name: str) -> tuple[Any, ...]:
        folder = ctx.folders.model_path(FOLDER, model_name)
        return (load_clip_scorer(manager_from(ctx.services), folder, label=model_name),)


class PickScoreRank(Node):
    category = "image/scoring"
    display_name = "PickScore Rank (best of N)"
    description = ("Score a batch of candidate images against the prompt with PickScore and sort them best first. "
                   "Outputs: all images sorted; the best top_k (the whole batch when it has fewer); the scores "
                   "and softmax probabilities over the batch, sorted; the original index of each. Equal scores "
                   "keep their original order.")
    inputs = [Link("scorer", "CLIP_SCORER"), Link("images", "IMAGE"), String("prompt", "", multiline=True),
              Int("top_k", 1, min=1, max=4096, tooltip="how many of the best images the top_k output keeps")]
    outputs = [Output("IMAGE", "images"), Output("IMAGE", "top_k"), Output("FLOAT", "scores", is_list=True),
               Output("FLOAT", "probabilities", is_list=True), Output("INT", "indices", is_list=True)]

    def run(self, ctx: Context, *, scorer: ClipScorer, images: torch.Tensor, prompt: str,
            top_k: int) -> tuple[Any, ...]:
        ranking = rank(pickscore(manager_from(ctx.services), scorer, images, prompt))
        ordered = images[ranking.order]
        return ordered, ordered[:top_k], ranking.scores, ranking.probabilities, ranking.order


NODES: list[type[Node]] = [PickScoreLoader, PickScoreRank]
