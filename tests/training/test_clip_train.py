"""TrainCLIP on coloured shapes: held-out retrieval rises far above chance, the scorer folder ranks
with PickScoreLoader/PickScoreRank, the CLIP output encodes as transformers' CLIPTextModel does,
a checkpoint of it would name its tokenizer, bad inputs are refused naming the input, and an
interrupted run resumes to the same weights as an uninterrupted one."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from graph_runtime.context import HookContext, Interrupted
from graph_runtime.folders import FolderPaths
from nodes.diffusion.nodes_conditioning import CLIPTextEncode
from nodes.infra.files import read_state_dict
from nodes.infra.model_manager import manager_from
from nodes.infra.tokenizer import find_tokenizer_dir, load_tokenizer
from nodes.scoring.pickscore import PickScoreLoader, PickScoreRank
from nodes.training.checkpoint_save import tokenizer_name
from nodes.training.clip_train import TrainCLIP
from nodes.training.dataset import load_dataset
from tests.training.clip_shapes import CAPTIONS, COLOURS, held_out_images, write_shapes
from tests.training.training_ctx import CtxFactory

SMALL = dict(text_width=32, text_layers=2, text_heads=2, vision_width=32, vision_layers=2, vision_heads=2,
             patch_size=8, projection_dim=32, steps=100, batch_size=32, learning_rate=2e-3, lr_scheduler="cosine",
             lr_warmup_steps=10, weight_decay=0.1, seed=0, checkpoint_every=0, preview_every=50, resume_from="")


def shapes_dataset(folders: FolderPaths) -> Any:
    folder = folders.input_dir / "shapes"
    if not folder.is_dir():
        write_shapes(folder, per_caption=8)
    return load_dataset(folder, resolution=32, crop="center", flip=False, aspect_buckets=False,
                        caption_template="{caption}", caption_dropout=0.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[CtxFactory, Any]:
    """100 steps on 96 images of 12 captions (about 6 s on one thread): (contexts, the node's Result)."""
    base = tmp_path_factory.mktemp("clip")
    make = CtxFactory(FolderPaths(base=base, models_roots=[base / "models"]))
    result = TrainCLIP().run(make(), dataset=shapes_dataset(make.folders), run_name="shapes", **SMALL)
    return make, result


def test_held_out_text_to_image_retrieval_rises_far_above_chance(trained) -> None:
    """New renders (other places and sizes) of the 12 captions: each caption's nearest image,
    by transformers' own CLIPModel on the saved folder, is its own in most cases (chance 1/12)."""
    from transformers import CLIPModel, CLIPProcessor

    make, result = trained
    folder = make.folders.model_path("scorers", result.outputs[1])
    model, processor = CLIPModel.from_pretrained(str(folder)).eval(), CLIPProcessor.from_pretrained(str(folder))
    images = list((held_out_images() * 255).round().to(torch.uint8).numpy())
    inputs = processor(text=CAPTIONS, images=images, return_tensors="pt", padding="max_length", max_length=77,
                       input_data_format="channels_last")
    with torch.no_grad():
        logits = model(**inputs).logits_per_text  # [captions, images]
    top1 = float((logits.argmax(dim=1) == torch.arange(len(CAPTIONS))).float().mean())
    assert top1 >= 0.5, top1  # chance: 0.083
    losses = result.outputs[2]["loss"]
    assert sum(losses[-10:]) / 10 < 0.6 * losses[0]
    assert any(p["filename"].startswith("step-") for p in result.ui["images"])  # the retrieval preview


def test_scorer_folder_ranks_the_image_of_the_prompt_first(trained) -> None:
    """PickScoreLoader lists and loads the folder; PickScoreRank puts an image of the prompt's
    colour first for every prompt, and the exact image for most."""
    make, result = trained
    ctx = make()
    assert result.outputs[1] in PickScoreLoader.inputs[0].choices(HookContext(folders=make.folders))
    (scorer,) = PickScoreLoader().run(ctx, model_name=result.outputs[1])
    images, exact = held_out_images(), 0
    for index, caption in enumerate(CAPTIONS):
        order = PickScoreRank().run(ctx, scorer=scorer, images=images, prompt=caption, top_k=1)[4]
        assert CAPTIONS[order[0]].split()[1] == caption.split()[1], (caption, CAPTIONS[order[0]])
        exact += order[0] == index
    assert exact >= len(CAPTIONS) // 2
    assert len(COLOURS) * 2 == len(CAPTIONS)


def test_clip_output_encodes_as_transformers_clip_text_model(trained) -> None:
    """CLIPTextEncode with the CLIP output equals CLIPTextModel (loaded by transformers from the
    scorer folder) on the same 77 token ids; each caption word is one token."""
    from transformers import CLIPTextModel

    make, result = trained
    clip = result.outputs[0]
    assert clip.family == "pixel"
    conditioning = CLIPTextEncode().run(make(), text="a purple circle", clip=clip)[0]
    tokenizer = load_tokenizer(clip.tokenizer_dirs[0])
    ids = tokenizer("a purple circle", padding="max_length", max_length=77, return_tensors="pt")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids[0, 1:4].tolist()) == ["a</w>", "purple</w>", "circle</w>"]
    folder = make.folders.model_path("scorers", result.outputs[1])
    with torch.no_grad():
        expected = CLIPTextModel.from_pretrained(str(folder)).eval()(ids).last_hidden_state
    torch.testing.assert_close(conditioning[0][0], expected, atol=1e-5, rtol=1e-5)


def test_a_checkpoint_of_the_clip_names_its_tokenizer_which_is_found(trained) -> None:
    make, result = trained
    clip = result.outputs[0]
    assert tokenizer_name(clip) == "shapes"
    found = find_tokenizer_dir("shapes", make.folders.model_dirs("clip_tokenizer"))
    assert found == Path(clip.tokenizer_dirs[0])


def test_the_clip_output_holds_the_trained_text_tower(trained) -> None:
    make, result = trained
    state, _ = read_state_dict(make.folders.model_path("scorers", result.outputs[1]) / "model.safetensors")
    with manager_from(make.services).use(*result.outputs[0].refs) as (encoder,):
        ours = dict(encoder.state_dict())
    assert ours
    for key, value in ours.items():
        torch.testing.assert_close(value, state[key if key.startswith("text_model.") else f"text_model.{key}"])


def test_widths_not_divisible_by_heads_are_refused_naming_the_input(make_ctx) -> None:
    hook = HookContext(folders=make_ctx.folders)
    assert "text_width 36 is not divisible by text_heads 8" in TrainCLIP.validate_inputs(
        hook, **{**SMALL, "text_width": 36, "text_heads": 8})
    assert "vision_width" in TrainCLIP.validate_inputs(hook, **{**SMALL, "vision_width": 40, "vision_heads": 3})
    assert "lr_warmup_steps" in TrainCLIP.validate_inputs(hook, **{**SMALL, "lr_scheduler": "constant"})
    assert TrainCLIP.validate_inputs(hook, **SMALL) is None


def test_datasets_the_vision_tower_cannot_take_are_refused(make_ctx) -> None:
    ctx = make_ctx()
    with pytest.raises(ValueError, match="dataset: its resolution 32 is not divisible by patch_size 5"):
        TrainCLIP().run(ctx, dataset=shapes_dataset(ctx.folders), run_name="bad", **{**SMALL, "patch_size": 5})
    with pytest.raises(ValueError, match="dataset: .*one square size"):
        square = shapes_dataset(ctx.folders)  # as aspect buckets put wide images apart
        wide = dataclasses.replace(square, items=square.items[:1] + tuple(
            dataclasses.replace(item, bucket=(48, 24)) for item in square.items[1:]))
        TrainCLIP().run(ctx, dataset=wide, run_name="bad", **SMALL)


def test_an_interrupted_run_resumes_to_the_uninterrupted_weights(make_ctx) -> None:
    """Interrupted after step 3 of 6, queued again: it continues from the checkpoint, and the saved
    model equals that of a run never interrupted."""
    tiny = {**SMALL, "text_width": 16, "text_layers": 1, "vision_width": 16, "vision_layers": 1,
            "projection_dim": 16, "steps": 6, "batch_size": 8, "preview_every": 0}
    dataset = shapes_dataset(make_ctx.folders)
    TrainCLIP().run(make_ctx(), dataset=dataset, run_name="straight", **tiny)

    def stop_after_step_3(node: str, value: float, maximum: float, preview: Any, text: Any) -> None:
        if value == 3:
            make_ctx.interrupt.set()

    ctx = dataclasses.replace(make_ctx(), report_progress=stop_after_step_3)
    with pytest.raises(Interrupted):
        TrainCLIP().run(ctx, dataset=dataset, run_name="resumed", **tiny)
    make_ctx.interrupt.clear()
    TrainCLIP().run(make_ctx(), dataset=dataset, run_name="resumed", **tiny)

    scorers = make_ctx.folders.model_dirs("scorers")[0]
    straight, _ = read_state_dict(scorers / "straight" / "model.safetensors")
    resumed, _ = read_state_dict(scorers / "resumed" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0)
