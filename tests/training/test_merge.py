"""ModelMergeSimple, ModelMergeBlocks and FuseModelsLayerwise: the merged weights are the per-parameter
formula exactly, the shared modules are untouched, and misuse is a clear error."""

from __future__ import annotations

import pytest
import torch

from nodes.diffusion.nodes_loaders import LoraLoader
from nodes.training.merge import FuseModelsLayerwise, ModelMergeAdd, ModelMergeBlocks, ModelMergeSimple, ModelMergeSubtract

from tests.training.merge_helpers import load, make_ctx, weights  # noqa: F401

# Two SD2 files of one architecture with different random weights.
FIRST, SECOND = "tiny-sd2-eps.safetensors", "tiny-sd2-v.safetensors"


@pytest.fixture
def pair(make_ctx):
    ctx = make_ctx()
    model1, model2 = load(ctx, FIRST)[0], load(ctx, SECOND)[0]
    return ctx, model1, model2, weights(ctx, model1), weights(ctx, model2)


def test_simple_merge_is_comfyui_formula_and_leaves_sources_untouched(pair) -> None:
    ctx, model1, model2, w1, w2 = pair
    (merged,) = ModelMergeSimple().run(ctx, model1=model1, model2=model2, ratio=0.3)
    got = weights(ctx, merged)
    assert all(torch.equal(got[k], w1[k] * 0.3 + w2[k] * 0.7) for k in w1)
    assert not torch.equal(got["conv_in.weight"], w1["conv_in.weight"])
    # The shared modules are restored bit-exactly after the use: nothing was copied into them.
    assert all(torch.equal(v, w1[k]) for k, v in weights(ctx, model1).items())
    assert all(torch.equal(v, w2[k]) for k, v in weights(ctx, model2).items())


def test_ratio_one_is_model1_itself(pair) -> None:
    ctx, model1, model2, _, _ = pair
    assert ModelMergeSimple().run(ctx, model1=model1, model2=model2, ratio=1.0)[0] is model1


def test_add_difference_is_comfyuis_subtract_then_add(pair) -> None:
    ctx, model1, model2, w1, w2 = pair
    (difference,) = ModelMergeSubtract().run(ctx, model1=model1, model2=model2, multiplier=0.5)
    got = weights(ctx, difference)
    assert all(torch.equal(got[k], (w1[k] * 0.5 + w2[k] * -0.5)) for k in w1)
    (total,) = ModelMergeAdd().run(ctx, model1=model2, model2=difference)
    got = weights(ctx, total)
    assert all(torch.allclose(got[k], w2[k] + 0.5 * (w1[k] - w2[k]), atol=1e-6) for k in w1)
    assert all(torch.equal(v, w1[k]) for k, v in weights(ctx, model1).items())


def test_blocks_merge_uses_comfyui_block_of_each_key(pair) -> None:
    ctx, model1, model2, w1, w2 = pair
    (merged,) = ModelMergeBlocks().run(ctx, model1=model1, model2=model2, input=0.25, middle=0.5, out=0.75)
    got = weights(ctx, merged)
    # diffusers name -> the ratio of its LDM block: input_blocks (and time_embed, ComfyUI's default:
    # the first argument), middle_block, output_blocks and the final out.0/out.2.
    expected = {"conv_in.weight": 0.25, "time_embedding.linear_1.weight": 0.25,
                "down_blocks.0.resnets.0.conv1.weight": 0.25, "mid_block.resnets.0.conv1.weight": 0.5,
                "mid_block.attentions.0.proj_in.weight": 0.5, "up_blocks.1.resnets.0.conv1.weight": 0.75,
                "conv_norm_out.weight": 0.75, "conv_out.bias": 0.75}
    for name, ratio in expected.items():
        assert torch.equal(got[name], w1[name] * ratio + w2[name] * (1.0 - ratio)), name


def test_fuse_layerwise_is_per_block_formula(pair) -> None:
    ctx, base, tuned, wb, wt = pair
    rules = "up_blocks.*.attentions: 0.8\nmid_block.attentions.0: 0.0\n# comment\n"
    (fused,) = FuseModelsLayerwise().run(ctx, base=base, fine_tuned=tuned, block_weights=rules, default_weight=0.3)
    got = weights(ctx, fused)
    shares = {"up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": 0.8, "up_blocks.1.resnets.0.conv1.weight": 0.3,
              "mid_block.attentions.0.proj_out.weight": 0.0, "conv_in.weight": 0.3}
    for name, share in shares.items():
        assert torch.equal(got[name], wb[name] * (1.0 - share) + wt[name] * share), name
    for name in got:  # every parameter is one of the three formulas
        share = 0.8 if name.startswith("up_blocks.1.attentions") else 0.0 if name.startswith("mid_block.attentions") else 0.3
        assert torch.equal(got[name], wb[name] * (1.0 - share) + wt[name] * share), name


def test_merge_with_a_lora_copy_of_itself_reads_the_lora_weights(make_ctx) -> None:
    """model2 may be model1's own module with a LoRA: its weights are taken before model1's use."""
    ctx = make_ctx()
    model, clip, _ = load(ctx, "tiny-sd15.safetensors")
    lora_model = LoraLoader().run(ctx, model=model, clip=clip, lora_name="tiny-sd15-kohya.safetensors",
                                  strength_model=1.0, strength_clip=0.0).outputs[0]
    plain, with_lora = weights(ctx, model), weights(ctx, lora_model)
    (merged,) = ModelMergeSimple().run(ctx, model1=model, model2=lora_model, ratio=0.5)
    got = weights(ctx, merged)
    assert all(torch.equal(got[k], plain[k] * 0.5 + with_lora[k] * 0.5) for k in plain)
    assert any(not torch.equal(got[k], plain[k]) for k in plain)
    assert all(torch.equal(v, plain[k]) for k, v in weights(ctx, model).items())


def test_other_family_or_architecture_is_refused_naming_inputs(make_ctx) -> None:
    ctx = make_ctx()
    sd15, sdxl = load(ctx, "tiny-sd15.safetensors")[0], load(ctx, "tiny-sdxl.safetensors")[0]
    with pytest.raises(ValueError, match="model2 is a sdxl model and model1 a sd15 one"):
        ModelMergeSimple().run(ctx, model1=sd15, model2=sdxl, ratio=0.5)
    inpainting = load(ctx, "tiny-sd15-inpainting.safetensors")[0]
    with pytest.raises(ValueError, match=r"fine_tuned's UNet does not fit base's .*conv_in.weight \[32, 4, 3, 3\] vs \[32, 9, 3, 3\]"):
        FuseModelsLayerwise().run(ctx, base=sd15, fine_tuned=inpainting, block_weights="", default_weight=0.3)


@pytest.mark.parametrize(("rules", "message"), [
    ("up_blocks.7.attentions: 0.5", "pattern 'up_blocks.7.attentions' .* matches no parameter of the UNet; its blocks "
                                    "are conv_in, time_embedding, down_blocks.0, down_blocks.1, up_blocks.0, up_blocks.1, "
                                    "mid_block, conv_norm_out, conv_out"),
    ("up_blocks.*: 0.5\n*.1: 0.2", "patterns 'up_blocks.\\*' \\(0.5\\) and '\\*.1' \\(0.2\\) both match up_blocks.1"),
    ("up_blocks.1.attentions: 0.5\nup_blocks.1.attentions.*: 0.4", "pattern 'up_blocks.1.attentions' .* has no effect"),
])
def test_patterns_that_do_not_fit_the_model_fail_the_node(pair, rules: str, message: str) -> None:
    ctx, base, tuned, _, _ = pair
    with pytest.raises(ValueError, match="block_weights: " + message):
        FuseModelsLayerwise().run(ctx, base=base, fine_tuned=tuned, block_weights=rules, default_weight=0.3)


def test_malformed_patterns_are_validation_errors(folders) -> None:
    from graph_runtime.context import HookContext

    ctx = HookContext(folders=folders)
    assert FuseModelsLayerwise.validate_inputs(ctx, block_weights="up_blocks.*: 0.8\nmid_block: 0.1") is None
    problem = FuseModelsLayerwise.validate_inputs(ctx, block_weights="up_blocks.*.attentions: 1.5")
    assert problem == "block_weights: line 1: weight 1.5 of 'up_blocks.*.attentions' is outside [0, 1]"
