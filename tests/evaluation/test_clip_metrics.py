"""CLIPScore equals a direct transformers computation on the tiny CLIP; PickScore equals the
best-of-N scorer's scores; the metric is added to the row; CLIP folders in models/clip_vision load."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from PIL import Image

from graph_runtime import HookContext
from nodes.evaluation.clip_metrics import CLIPScore, CLIPScoreModelLoader, PickScore
from nodes.evaluation.rows import EvalRow
from nodes.scoring.pickscore import PickScoreLoader, PickScoreRank

PROMPT = "a red mug on a wooden table"


def _images(count: int) -> torch.Tensor:
    pixels = torch.randint(0, 256, (count, 40, 48, 3), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
    return pixels.float() / 255


def _flipped_copy(source: Path, target: Path) -> None:
    """``source`` with its text projection negated: every cosine changes sign, so the images that
    score 0 (clamped) with one model score 100 x |cos| with the other."""
    from safetensors.torch import load_file, save_file

    if target.exists():
        return
    shutil.copytree(source, target)
    weights = load_file(target / "model.safetensors")
    weights["text_projection.weight"] = -weights["text_projection.weight"]
    save_file(weights, target / "model.safetensors", metadata={"format": "pt"})


def test_clip_score_equals_transformers_cosine_times_100_clamped(make_ctx, zoo_root: Path, own_models: Path) -> None:
    from transformers import CLIPModel, CLIPProcessor

    from nodes.evaluation.clip_metrics import clip_score
    from nodes.infra.model_manager import manager_from

    folder = zoo_root / "scorers" / "tiny-clip-scorer"
    _flipped_copy(folder, own_models / "scorers" / "tiny-clip-flipped")
    model, processor = CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)
    images = _images(6)
    inputs = processor(text=[PROMPT], images=[Image.fromarray((i * 255).round().byte().numpy()) for i in images],
                       padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    cosine = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds)
    manager = manager_from(make_ctx().services)
    scores = {}
    for name, sign in (("tiny-clip-scorer", 1), ("tiny-clip-flipped", -1)):
        scorer = PickScoreLoader().run(make_ctx(), model_name=name)[0]
        scores[name] = clip_score(manager, scorer, images, PROMPT)
        torch.testing.assert_close(scores[name], 100 * (sign * cosine).clamp(min=0), rtol=1e-4, atol=1e-4)
    # one of the two models scores each image above 0: the clamp and the cosine are both checked
    torch.testing.assert_close(scores["tiny-clip-scorer"] + scores["tiny-clip-flipped"], 100 * cosine.abs(),
                               rtol=1e-4, atol=1e-4)
    assert (100 * cosine.abs() > 1e-3).all()

    scorer = PickScoreLoader().run(make_ctx(), model_name="tiny-clip-flipped")[0]
    row = EvalRow(index=7, prompt=PROMPT, seed=3, sweep="guidance_scale", value=4.0)
    score, scored = CLIPScore().run(make_ctx(), scorer=scorer, images=images, prompt=PROMPT, row=row)
    assert abs(score - float(scores["tiny-clip-flipped"].mean())) < 1e-4
    assert scored.metrics == {"clip_score": score} and (scored.index, scored.value, scored.seed) == (7, 4.0, 3)


def test_pick_score_is_the_best_of_n_scorers_score(make_ctx) -> None:
    scorer = PickScoreLoader().run(make_ctx(), model_name="tiny-clip-scorer")[0]
    images = _images(4)
    score, row = PickScore().run(make_ctx(), scorer=scorer, images=images, prompt=PROMPT)
    ranked = PickScoreRank().run(make_ctx(), scorer=scorer, images=images, prompt=PROMPT, top_k=1)[2]
    assert abs(score - sum(ranked) / 4) < 1e-5
    assert row.prompt == PROMPT and row.metrics == {"pick_score": score}


def test_a_clip_folder_in_clip_vision_is_one_choice_and_loads(make_ctx, eval_folders, zoo_root: Path,
                                                              own_models: Path) -> None:
    target = own_models / "clip_vision" / "tiny-clip"
    if not target.exists():
        shutil.copytree(zoo_root / "scorers" / "tiny-clip-scorer", target)
    choices = CLIPScoreModelLoader.inputs[0].current_choices(HookContext(eval_folders))
    assert "tiny-clip" in choices and not any(c.startswith("tiny-clip/") for c in choices)
    # The zoo's single-file vision tower (CLIPVisionLoader's) has no text side: not offered.
    assert (zoo_root / "clip_vision" / "tiny-clip-vision.safetensors").is_file()
    assert not any(c.endswith(".safetensors") for c in choices)
    scorer = CLIPScoreModelLoader().run(make_ctx(), model_name="tiny-clip")[0]
    direct = PickScoreLoader().run(make_ctx(), model_name="tiny-clip-scorer")[0]
    images = _images(2)
    a = CLIPScore().run(make_ctx(), scorer=scorer, images=images, prompt=PROMPT)[0]
    b = CLIPScore().run(make_ctx(), scorer=direct, images=images, prompt=PROMPT)[0]
    assert a == b
