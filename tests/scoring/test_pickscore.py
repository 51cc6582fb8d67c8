"""PickScore: the node's scores are transformers' own CLIP logits; ranking, ties, top-k; the
best-of-N workflow runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from graph_runtime.validation import WorkflowInvalid
from nodes.scoring.pickscore import PickScoreLoader, PickScoreRank, rank

PROMPT = "a red mug on a wooden table"
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def _candidates(count: int) -> torch.Tensor:
    """uint8-exact images (what a decoded PNG gives), as IMAGE floats."""
    pixels = torch.randint(0, 256, (count, 40, 48, 3), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    return pixels.float() / 255


def _rank(make_ctx, images: torch.Tensor, top_k: int = 1) -> tuple:
    scorer = PickScoreLoader().run(make_ctx(), model_name="tiny-clip-scorer")[0]
    return PickScoreRank().run(make_ctx(), scorer=scorer, images=images, prompt=PROMPT, top_k=top_k)


def test_scores_equal_a_direct_transformers_computation(make_ctx, zoo_root: Path) -> None:
    from transformers import CLIPModel, CLIPProcessor

    images = _candidates(5)
    ordered, best, scores, probabilities, indices = _rank(make_ctx, images, top_k=2)
    folder = zoo_root / "scorers" / "tiny-clip-scorer"
    model, processor = CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)
    pictures = [Image.fromarray((image * 255).round().byte().numpy()) for image in images]
    inputs = processor(text=[PROMPT], images=pictures, padding=True, truncation=True, max_length=77,
                       return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits_per_text[0]  # logit_scale.exp() * normalised text . image
    torch.testing.assert_close(torch.tensor(scores), expected[indices], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.tensor(probabilities), expected.softmax(-1)[indices], rtol=1e-5, atol=1e-6)
    assert indices == sorted(range(5), key=lambda i: -float(expected[i]))  # no near-ties here
    assert torch.equal(ordered, images[indices]) and torch.equal(best, images[indices[:2]])


def test_equal_scores_keep_their_original_order() -> None:
    ranking = rank(torch.tensor([1.0, 3.0, 1.0, 3.0, 2.0]))
    assert ranking.order == [1, 3, 4, 0, 2]
    assert ranking.probabilities[0] == ranking.probabilities[1]


def test_identical_candidates_tie_and_keep_their_order(make_ctx) -> None:
    two = _candidates(2)
    _, _, scores, _, indices = _rank(make_ctx, torch.cat([two, two]))
    assert scores[0] == pytest.approx(scores[1], abs=1e-4)  # batched float noise only
    assert indices in ([0, 2, 1, 3], [1, 3, 0, 2])


def test_top_k_larger_than_the_batch_keeps_the_whole_batch(make_ctx) -> None:
    _, best, _, _, _ = _rank(make_ctx, _candidates(3), top_k=10)
    assert best.shape[0] == 3


def test_a_folder_without_processor_files_is_an_error_naming_it(make_ctx, zoo_root: Path) -> None:
    import shutil

    from nodes.infra.files import ModelFileError

    source, broken = zoo_root / "scorers" / "tiny-clip-scorer", zoo_root / "scorers" / "no-processor"
    broken.mkdir(exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(source / name, broken / name)
    with pytest.raises(ModelFileError, match="no-processor: cannot load the CLIP processor"):
        PickScoreLoader().run(make_ctx(), model_name="no-processor")



def test_a_folder_without_tokenizer_files_is_an_error_naming_it(make_ctx, zoo_root: Path) -> None:
    import shutil

    from nodes.infra.files import ModelFileError

    source, broken = zoo_root / "scorers" / "tiny-clip-scorer", zoo_root / "scorers" / "no-tokenizer"
    shutil.copytree(source, broken, dirs_exist_ok=True)
    (broken / "tokenizer.json").unlink()  # transformers then builds a tokenizer of 2 special tokens
    with pytest.raises(ModelFileError, match="no-tokenizer: the CLIP tokenizer .* has no vocabulary"):
        PickScoreLoader().run(make_ctx(), model_name="no-tokenizer")


@pytest.mark.parametrize("height", [1, 3])
def test_images_one_or_three_pixels_tall_score_as_transformers_does(make_ctx, zoo_root: Path, height: int) -> None:
    from transformers import CLIPModel, CLIPProcessor

    pixels = torch.randint(0, 256, (2, height, 50, 3), generator=torch.Generator().manual_seed(4), dtype=torch.uint8)
    images = pixels.float() / 255
    _, _, scores, _, indices = _rank(make_ctx, images)
    folder = zoo_root / "scorers" / "tiny-clip-scorer"
    model, processor = CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)
    inputs = processor(text=[PROMPT], images=[Image.fromarray(image.numpy()) for image in pixels], padding=True,
                       return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits_per_text[0]
    torch.testing.assert_close(torch.tensor(scores), expected[indices], rtol=1e-5, atol=1e-5)

def test_best_of_n_workflow_saves_the_best_candidate(runtime) -> None:
    prompt = json.loads((WORKFLOWS / "best_of_n.json").read_text())
    assert prompt["5"]["inputs"]["batch_size"] == 4
    result = runtime.execute(prompt, keep=["11"])
    assert result.status == "success", result.error
    images, best, scores, _, indices = result.values["11"]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True) and sorted(indices) == [0, 1, 2, 3]
    saved = result.outputs["9"]["images"]
    assert len(saved) == 1
    picture = Image.open(runtime.folders.output_dir / saved[0].get("subfolder", "") / saved[0]["filename"])
    assert picture.size == (64, 64)
    assert torch.equal(best[0], images[0][:1])


def test_a_missing_scorer_folder_names_the_folder(runtime) -> None:
    prompt = json.loads((WORKFLOWS / "best_of_n.json").read_text())
    prompt["10"]["inputs"]["model_name"] = "PickScore_v1"
    with pytest.raises(WorkflowInvalid, match="scorers"):
        runtime.execute(prompt)


@pytest.mark.parametrize("images", [torch.rand(2, 20, 20, 2), torch.rand(0, 8, 8, 3),
                                    torch.full((1, 8, 8, 3), float("nan"))])
def test_images_that_cannot_be_scored_are_refused_with_their_shape_or_reason(images) -> None:
    from nodes.infra.clip_scorer import to_uint8_images

    with pytest.raises(ValueError, match="channels|NaN"):
        to_uint8_images(images)
