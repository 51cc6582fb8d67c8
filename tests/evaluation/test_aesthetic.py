"""AestheticScore: the published MLP layout on the CLIP's normalised image embeddings, computed
independently here; a missing predictor or a CLIP of another width is named."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from graph_runtime import HookContext
from graph_runtime.folders import FolderPaths
from nodes.evaluation.aesthetic import PREDICTOR_FILE, AestheticScore
from nodes.evaluation.rows import EvalRow
from nodes.scoring.pickscore import PickScoreLoader


def _write_predictor(path: Path, width: int, seed: int) -> dict[str, torch.Tensor]:
    """The published file's layout: the state dict of an ``MLP`` whose ``layers`` Sequential holds
    Linear layers at 0, 2, 4, 6 and 7 (dropouts between), widths width-1024-128-64-16-1."""
    torch.manual_seed(seed)
    widths = [(width, 1024), (1024, 128), (128, 64), (64, 16), (16, 1)]
    state = {}
    for index, (fan_in, fan_out) in zip((0, 2, 4, 6, 7), widths):
        state[f"layers.{index}.weight"] = torch.randn(fan_out, fan_in) / fan_in ** 0.5
        state[f"layers.{index}.bias"] = torch.randn(fan_out)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_score_is_the_mlp_on_normalised_clip_image_embeddings(make_ctx, zoo_root: Path, own_models: Path) -> None:
    from transformers import CLIPModel, CLIPProcessor

    state = _write_predictor(own_models / "aesthetic" / PREDICTOR_FILE, 16, seed=0)
    images = torch.randint(0, 256, (3, 40, 40, 3), generator=torch.Generator().manual_seed(2)).float() / 255
    folder = zoo_root / "scorers" / "tiny-clip-scorer"
    model, processor = CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)
    pixels = processor(images=[Image.fromarray((i * 255).byte().numpy()) for i in images], return_tensors="pt")
    with torch.no_grad():
        embeds = model.get_image_features(**pixels)
        embeds = embeds if isinstance(embeds, torch.Tensor) else embeds.pooler_output
        x = embeds / embeds.norm(dim=-1, keepdim=True)
        for index in (0, 2, 4, 6, 7):  # no activations in the linear predictor
            x = x @ state[f"layers.{index}.weight"].T + state[f"layers.{index}.bias"]
    scorer = PickScoreLoader().run(make_ctx(), model_name="tiny-clip-scorer")[0]
    row = EvalRow(index=2, prompt="p", seed=1, sweep="cfg", value=3.0)
    score, scored = AestheticScore().run(make_ctx(), scorer=scorer, images=images, predictor=PREDICTOR_FILE, row=row)
    assert abs(score - float(x.mean())) < 1e-4 * max(1.0, abs(float(x.mean())))
    assert scored.metrics == {"aesthetic_score": score} and scored.index == 2


def test_a_predictor_for_another_clip_width_is_named(make_ctx, own_models: Path) -> None:
    import pytest

    _write_predictor(own_models / "aesthetic" / "vit-l.pth", 768, seed=1)
    scorer = PickScoreLoader().run(make_ctx(), model_name="tiny-clip-scorer")[0]
    with pytest.raises(ValueError, match="vit-l.pth takes 768-wide CLIP embeddings but tiny-clip-scorer gives 16"):
        AestheticScore().run(make_ctx(), scorer=scorer, images=torch.rand(1, 8, 8, 3), predictor="vit-l.pth")


def test_a_missing_predictor_is_a_validation_error_naming_file_and_folder(tmp_path) -> None:
    error = AestheticScore.validate_inputs(HookContext(FolderPaths(base=tmp_path)), predictor=PREDICTOR_FILE)
    assert PREDICTOR_FILE in error and "'aesthetic' models folder" in error
    assert str(tmp_path / "models" / "aesthetic") in error
