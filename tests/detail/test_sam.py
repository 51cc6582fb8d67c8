"""SAMLoader recognises the published layouts and the tiny zoo SAM; SAMSegmentBoxes keeps SAM's mask
when its score reaches the threshold and falls back to the box when it does not."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from nodes.detail.bbox import Box
from nodes.detail.sam import SAMLoader, SAMSegmentBoxes, sam_variant
from nodes.infra.files import ModelFileError


@pytest.mark.parametrize("variant", ["vit_b", "vit_l", "vit_h"])
def test_published_layouts_are_recognised_from_their_shapes(variant):
    from segment_anything import sam_model_registry

    with torch.device("meta"):  # full size, no memory: only keys and shapes matter
        state = sam_model_registry[variant]().state_dict()
    assert sam_variant(state, f"sam_{variant}.pth") == variant


def test_other_files_are_refused_with_their_name():
    with pytest.raises(ModelFileError, match="mobile_sam.pt is not a segment-anything checkpoint"):
        sam_variant({"image_encoder.layers.0.weight": torch.empty(1)}, "mobile_sam.pt")
    odd = {"image_encoder.patch_embed.proj.weight": torch.empty(512, 3, 16, 16),
           **{f"image_encoder.blocks.{i}.norm1.weight": torch.empty(512) for i in range(6)}}
    with pytest.raises(ModelFileError, match="odd.pth: a SAM image encoder 512 wide with 6 blocks"):
        sam_variant(odd, "odd.pth")


def test_tiny_zoo_sam_loads(make_ctx):
    (model,) = SAMLoader().run(make_ctx(), model_name="tiny-sam.safetensors")
    assert model.variant == "custom (32 wide)"
    from nodes.infra.model_manager import manager_from

    with model.use(manager_from(make_ctx.services)) as sam:
        assert sam.image_encoder.img_size == 64 and not sam.training
        assert next(sam.parameters()).dtype == torch.float32


def test_missing_sam_file_names_file_and_folder(make_ctx):
    from graph_runtime.folders import MissingModelFile

    with pytest.raises(MissingModelFile, match=r"'sam_vit_b_01ec64\.pth' not found in the 'sams' folder"):
        SAMLoader().run(make_ctx(), model_name="sam_vit_b_01ec64.pth")


@pytest.mark.slow
def test_full_size_vit_b_checkpoint_loads(make_ctx, folders, tmp_path):
    """A random-weight file in the published sam_vit_b_01ec64.pth layout (torch.save of the state dict)."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    reference = sam_model_registry["vit_b"]().eval()
    path = folders.models_roots[0] / "sams" / "sam_vit_b_01ec64.pth"
    torch.save(reference.state_dict(), path)
    try:
        (model,) = SAMLoader().run(make_ctx(), model_name=path.name)
        assert model.variant == "vit_b"
        from nodes.infra.model_manager import manager_from

        with model.use(manager_from(make_ctx.services)) as sam:
            for (name, ours), theirs in zip(sam.state_dict().items(), reference.state_dict().values()):
                assert torch.equal(ours, theirs), name
    finally:
        path.unlink()


def _segment(ctx, image, boxes, threshold):
    (model,) = SAMLoader().run(ctx, model_name="tiny-sam.safetensors")
    return SAMSegmentBoxes().run(ctx, sam_model=model, image=image, bboxes=boxes, threshold=threshold)[0], model


def test_low_score_falls_back_to_the_box(make_ctx, caplog):
    from segment_anything import SamPredictor

    from nodes.infra.model_manager import manager_from

    image = torch.rand(1, 48, 64, 3, generator=torch.Generator().manual_seed(1))
    box = Box(10, 8, 30, 40, image_size=(48, 64))
    (model,) = SAMLoader().run(make_ctx(), model_name="tiny-sam.safetensors")
    with model.use(manager_from(make_ctx.services)) as sam:  # segment_anything called directly
        predictor = SamPredictor(sam)
        predictor.set_image((image[0].numpy() * 255).round().astype(np.uint8))
        masks, scores, _ = predictor.predict(box=np.array([10, 8, 30, 40]), multimask_output=False)
    score, sam_mask = float(scores[0]), torch.from_numpy(masks[0].astype(np.float32))
    kept, _ = _segment(make_ctx(), image, (box,), threshold=score - 1e-3)
    assert torch.equal(kept[0], sam_mask)
    with caplog.at_level(logging.INFO, logger="nodes.detail.sam"):
        fallback, _ = _segment(make_ctx(), image, (box,), threshold=score + 1e-3)
    expected = torch.zeros(1, 48, 64)
    expected[0, 8:40, 10:30] = 1
    assert torch.equal(fallback, expected) and not torch.equal(sam_mask, expected[0])
    assert f"SAM score {score:.3f} < {score + 1e-3}, box used" in caplog.text


def test_masks_of_a_batch_go_to_their_image(make_ctx):
    image = torch.rand(2, 48, 64, 3, generator=torch.Generator().manual_seed(2))
    boxes = (Box(2, 2, 20, 20, batch_index=1, image_size=(48, 64)),)
    fallback, _ = _segment(make_ctx(), image, boxes, threshold=1e6)
    assert fallback[0].sum() == 0 and fallback[1, 2:20, 2:20].min() == 1 and fallback[1].sum() == 18 * 18


def test_boxes_from_another_image_are_refused(make_ctx):
    image = torch.rand(1, 48, 64, 3)
    with pytest.raises(ValueError, match="bboxes: a box refers to image 0 of size 32x32.*64x48"):
        _segment(make_ctx(), image, (Box(0, 0, 8, 8, image_size=(32, 32)),), 0.5)


def _tiny_sam_with(tmp_path, folders, metadata: dict[str, str], name: str):
    """The zoo's tiny SAM tensors saved again with other metadata, in a models root of its own."""
    from safetensors.torch import load_file, save_file

    root = tmp_path / "models"
    (root / "sams").mkdir(parents=True)
    save_file(load_file(folders.models_roots[0] / "sams" / "tiny-sam.safetensors"), root / "sams" / name,
              metadata=metadata)
    return root / "sams" / name


@pytest.mark.parametrize(("metadata", "message"), [
    ({"nodeloom_config": "{not json"}, "odd.safetensors: its nodeloom_config metadata is not valid JSON"),
    ({"nodeloom_config": '{"sam": "vit_b"}'}, "odd.safetensors: the 'sam' entry of its nodeloom_config metadata is "
                                              "not a JSON object"),
    ({"nodeloom_config": '{"sam": {"img_size": 64}}'}, "odd.safetensors: its nodeloom_config metadata does not "
                                                       "describe a SAM \\(KeyError: 'prompt_embed_dim'\\)"),
])
def test_malformed_architecture_metadata_names_the_file(tmp_path, folders, metadata, message):
    from nodes.detail.sam import load_sam

    with pytest.raises(ModelFileError, match=message):
        load_sam(_tiny_sam_with(tmp_path, folders, metadata, "odd.safetensors"))


def test_weights_of_another_shape_name_the_file_and_tensors(tmp_path, folders):
    import json

    from safetensors import safe_open

    from nodes.detail.sam import load_sam

    with safe_open(folders.models_roots[0] / "sams" / "tiny-sam.safetensors", "pt") as f:
        config = json.loads(f.metadata()["nodeloom_config"])
    config["sam"]["encoder_embed_dim"] = 64  # the file's tensors are 32 wide
    path = _tiny_sam_with(tmp_path, folders, {"nodeloom_config": json.dumps(config)}, "wide.safetensors")
    expected = (r"wide.safetensors: the weights do not fit the SAM architecture "
                r"\(\d+ tensor\(s\) of another shape: image_encoder\.\S+ \(32,\) vs \(64,\)")
    with pytest.raises(ModelFileError, match=expected):
        load_sam(path)
