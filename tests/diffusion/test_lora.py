"""LoraLoader on the tiny SD1.5 model with files of every variant: each patched weight is the
variant's formula, every key not used is named, files that do not fit are refused by name, and a
peft file's lora_alpha is read as diffusers reads it."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import pytest
import torch

from graph_runtime.context import Context, InterruptFlag, Services
from graph_runtime.folders import FolderPaths
from nodes.diffusion.nodes_loaders import LoraLoader, LoraLoaderModelOnly
from nodes.infra.files import ModelFileError, save_safetensors
from nodes.infra.model_manager import manager_from

from diffusion_helpers import load, pipeline

BLOCK = "down_blocks_0_attentions_0_transformer_blocks_0_"
STRENGTH = 0.8


@pytest.fixture
def ctx(zoo_root: Path, tmp_path: Path) -> Context:
    """A Context whose loras folder is this test's own, next to the tiny zoo."""
    (tmp_path / "models" / "loras").mkdir(parents=True)
    folders = FolderPaths(base=tmp_path, models_roots=[tmp_path / "models", zoo_root])
    return Context(prompt_id="test", node_id="10", class_type="LoraLoader", folders=folders, services=Services(),
                   interrupt=InterruptFlag(), report_progress=lambda *a: None, extra_data={})


def write(ctx: Context, name: str, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    save_safetensors(state, ctx.folders.models_roots[0] / "loras" / name, metadata)
    return name


def rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape) * 0.1


def run_lora(ctx: Context, name: str, strength_clip: float = STRENGTH):
    model, clip, _ = load(ctx, "tiny-sd15.safetensors")
    result = LoraLoader().run(ctx, model=model, clip=clip, lora_name=name, strength_model=STRENGTH,
                              strength_clip=strength_clip)
    return model, clip, result


def test_every_variant_is_applied_by_its_formula(ctx: Context) -> None:
    manager = manager_from(ctx.services)
    model, clip, _ = load(ctx, "tiny-sd15.safetensors")
    unet, te = manager.ensure_loaded(model.ref), manager.ensure_loaded(clip.refs[0])
    base = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    te_base = {k: v.detach().clone() for k, v in te.state_dict().items()}
    q, k, v = (f"down_blocks.0.attentions.0.transformer_blocks.0.attn1.{n}" for n in ("to_q", "to_k", "to_v"))
    conv, proj = "down_blocks.0.resnets.0.conv1", "down_blocks.0.attentions.0.proj_in"
    te_q = next(n for n in te_base if n.endswith("layers.0.self_attn.q_proj.weight"))[: -len(".weight")]
    dim, te_dim = base[q + ".weight"].shape[0], te_base[te_q + ".weight"].shape[0]
    t = {  # DoRA on a LoRA; LoCon with a Tucker mid on a 3x3 conv; LoHa; LoKr; diff + diff_b; LoHa on CLIP
        "up": rand(dim, 4), "down": rand(4, dim), "dora": torch.rand(1, dim) + 0.5,
        "c_up": rand(32, 2, 1, 1), "c_mid": rand(2, 2, 3, 3), "c_down": rand(2, 32, 1, 1),
        "h": [rand(dim, 2), rand(2, dim), rand(dim, 2), rand(2, dim)],
        "k1": rand(4, 4), "k2a": rand(dim // 4, 2), "k2b": rand(2, dim // 4),
        "diff": rand(*base[proj + ".weight"].shape), "diff_b": rand(dim),
        "th": [rand(te_dim, 2), rand(2, te_dim), rand(te_dim, 2), rand(2, te_dim)],
    }
    state = {f"lora_unet_{BLOCK}attn1_to_q.lora_up.weight": t["up"], f"lora_unet_{BLOCK}attn1_to_q.lora_down.weight":
             t["down"], f"lora_unet_{BLOCK}attn1_to_q.alpha": torch.tensor(2.0),
             f"lora_unet_{BLOCK}attn1_to_q.dora_scale": t["dora"],
             "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": t["c_up"],
             "lora_unet_down_blocks_0_resnets_0_conv1.lora_mid.weight": t["c_mid"],
             "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": t["c_down"],
             "lora_unet_down_blocks_0_resnets_0_conv1.alpha": torch.tensor(1.0),
             f"lora_unet_{BLOCK}attn1_to_v.lokr_w1": t["k1"], f"lora_unet_{BLOCK}attn1_to_v.lokr_w2_a": t["k2a"],
             f"lora_unet_{BLOCK}attn1_to_v.lokr_w2_b": t["k2b"], f"lora_unet_{BLOCK}attn1_to_v.alpha": torch.tensor(1.0),
             "lora_unet_down_blocks_0_attentions_0_proj_in.diff": t["diff"],
             "lora_unet_down_blocks_0_attentions_0_proj_in.diff_b": t["diff_b"]}
    for prefix, name, factors in ((f"lora_unet_{BLOCK}", "attn1_to_k", t["h"]),
                                  ("lora_te_", "text_model_encoder_layers_0_self_attn_q_proj", t["th"])):
        for role, tensor in zip(("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"), factors):
            state[f"{prefix}{name}.{role}"] = tensor
    result = LoraLoader().run(ctx, model=model, clip=clip, lora_name=write(ctx, "lycoris.safetensors", state),
                              strength_model=STRENGTH, strength_clip=STRENGTH)
    lmodel, lclip = result.outputs
    text = result.ui["text"][0]
    assert "UNet 5 matched (diff 1, loha 1, lokr 1, lora 2), 0 ignored" in text
    assert "text encoder 1 matched (loha 1)" in text and "ignored:" not in text

    s = STRENGTH
    merged = base[q + ".weight"] + 0.5 * t["up"] @ t["down"]
    dora = base[q + ".weight"] + s * (t["dora"] * merged / merged.norm(dim=0, keepdim=True) - base[q + ".weight"])
    tucker = torch.einsum("om,mnhw,ni->oihw", t["c_up"][:, :, 0, 0], t["c_mid"], t["c_down"][:, :, 0, 0])
    h = t["h"]
    w2 = t["k2a"] @ t["k2b"]
    kron = torch.cat([torch.cat([t["k1"][i, j] * w2 for j in range(4)], dim=1) for i in range(4)], dim=0)
    expected = {q: dora, conv: base[conv + ".weight"] + s * 0.5 * tucker,
                k: base[k + ".weight"] + s * (h[0] @ h[1]) * (h[2] @ h[3]),  # no alpha: scale 1
                v: base[v + ".weight"] + s * 0.5 * kron, proj: base[proj + ".weight"] + s * t["diff"]}
    with lmodel.use(manager) as patched_unet:
        for path, weight in expected.items():
            assert torch.allclose(patched_unet.get_submodule(path).weight, weight, atol=1e-5), path
        assert torch.allclose(patched_unet.get_submodule(proj).bias, base[proj + ".bias"] + s * t["diff_b"], atol=1e-6)
    with manager.use(lclip.refs[0]) as (encoder,):
        from nodes.diffusion.lora import patched
        with patched(encoder, lclip.patches[0]):
            th = t["th"]
            want = te_base[te_q + ".weight"] + s * (th[0] @ th[1]) * (th[2] @ th[3])
            assert torch.allclose(encoder.get_submodule(te_q).weight, want, atol=1e-5)
    assert all(torch.equal(unet.state_dict()[n], w) for n, w in base.items()), "the shared UNet is restored"


def test_keys_not_understood_are_reported_by_name(ctx: Context, caplog: pytest.LogCaptureFixture) -> None:
    state = {f"lora_unet_{BLOCK}attn1_to_q.lora_up.weight": rand(32, 2),
             f"lora_unet_{BLOCK}attn1_to_q.lora_down.weight": rand(2, 32),
             f"lora_unet_{BLOCK}attn1_to_q.oft_blocks": rand(4, 8, 8),
             "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": rand(32, 2, 1, 1),
             "lora_unet_no_such_block.lora_up.weight": rand(32, 2), "lora_unet_no_such_block.lora_down.weight":
             rand(2, 32), "text_encoder_2.text_model.encoder.layers.0.mlp.fc1.lora_A.weight": rand(2, 32),
             "text_encoder_2.text_model.encoder.layers.0.mlp.fc1.lora_B.weight": rand(32, 2),
             "optimizer_step": torch.tensor(1000)}
    with caplog.at_level(logging.INFO, logger="nodes.diffusion.nodes_loaders"):
        _, _, result = run_lora(ctx, write(ctx, "partial.safetensors", state))
    text = result.ui["text"][0]
    assert "UNet 1 matched (lora 1), 2 ignored" in text
    assert "7 key(s) ignored" in text
    for key, reason in ((f"lora_unet_{BLOCK}attn1_to_q.oft_blocks", "unknown key"),
                        ("lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight", "not a complete"),
                        ("lora_unet_no_such_block.lora_down.weight", "no such module in the UNet"),
                        ("text_encoder_2.text_model.encoder.layers.0.mlp.fc1.lora_B.weight", "the model has no text encoder 2"),
                        ("optimizer_step", "unknown key")):
        assert f"{key} ({reason}" in text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "lora_unet_no_such_block.lora_up.weight" in warnings[0]


def test_a_file_matching_nothing_is_an_error_naming_it(ctx: Context) -> None:
    state = {"text_encoder_2.text_model.encoder.layers.0.mlp.fc1.lora_A.weight": rand(2, 32),
             "text_encoder_2.text_model.encoder.layers.0.mlp.fc1.lora_B.weight": rand(32, 2)}
    with pytest.raises(ModelFileError, match=r"sdxl-te2\.safetensors matches no module.*the model has no text encoder 2"):
        run_lora(ctx, write(ctx, "sdxl-te2.safetensors", state))


def test_shape_mismatch_is_refused_naming_file_module_and_shapes(ctx: Context) -> None:
    # An SD2 LoRA on SD1.5: the cross-attention key projection reads a wider context.
    state = {f"lora_unet_{BLOCK}attn2_to_k.lora_down.weight": rand(4, 48),
             f"lora_unet_{BLOCK}attn2_to_k.lora_up.weight": rand(32, 4)}
    with pytest.raises(ModelFileError) as info:
        run_lora(ctx, write(ctx, "sd2-style.safetensors", state))
    message = str(info.value)
    assert "sd2-style.safetensors" in message and f"{BLOCK}attn2_to_k" in message
    assert "[32, 48]" in message and "[32, 32]" in message


def test_model_only_reports_what_it_leaves_to_the_text_encoder(ctx: Context, zoo_root: Path) -> None:
    model, _, _ = load(ctx, "tiny-sd15.safetensors")
    result = LoraLoaderModelOnly().run(ctx, model=model, lora_name="tiny-sd15-kohya.safetensors",
                                       strength_model=1.0)
    assert result.ui["text"][0].startswith("LoRA tiny-sd15-kohya.safetensors: UNet 32 matched (lora 32), 0 ignored; "
                                           "not applied here: text encoder")


def test_peft_lora_alpha_from_metadata_matches_diffusers(ctx: Context) -> None:
    """alpha != r (and an alpha_pattern) saved by diffusers/peft: the same weights as load_lora_weights."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import get_peft_model_state_dict

    manager = manager_from(ctx.services)
    model, clip, vae = load(ctx, "tiny-sd15.safetensors")
    trained = copy.deepcopy(manager.ensure_loaded(model.ref))
    special = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    config = LoraConfig(r=4, lora_alpha=12, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                        alpha_pattern={special: 2})
    trained.add_adapter(config)
    folder = ctx.folders.models_roots[0] / "loras"
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(trained),
                                              unet_lora_adapter_metadata=config.to_dict(),
                                              weight_name="peft-alpha.safetensors")
    lmodel = LoraLoaderModelOnly().run(ctx, model=model, lora_name="peft-alpha.safetensors",
                                       strength_model=1.0).outputs[0]
    with lmodel.use(manager) as unet:
        ours = {n: m.weight.detach().clone() for n, m in unet.named_modules() if n.endswith(tuple(config.target_modules))}
    pipe = pipeline(ctx, model, clip, vae, "txt2img")
    pipe.load_lora_weights(str(folder / "peft-alpha.safetensors"), adapter_name="ref")
    try:
        layers = {n: m for n, m in pipe.unet.named_modules() if isinstance(m, BaseTunerLayer)}
        assert layers.keys() == ours.keys() and len(layers) == 32
        assert layers[special].scaling["ref"] == 0.5 and layers[special.replace("to_q", "to_k")].scaling["ref"] == 3.0
        for name, layer in layers.items():
            reference = layer.base_layer.weight + layer.get_delta_weight("ref")
            assert torch.allclose(ours[name], reference, atol=1e-6), name
    finally:
        pipe.unload_lora_weights()


def test_old_attention_processor_keys_and_zero_strength(ctx: Context) -> None:
    attn = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor"
    up, down = rand(32, 2), rand(2, 32)
    name = write(ctx, "processor.safetensors", {f"{attn}.to_out_lora.up.weight": up,
                                                f"{attn}.to_out_lora.down.weight": down})
    model, clip, result = run_lora(ctx, name)
    assert "UNet 1 matched (lora 1), 0 ignored" in result.ui["text"][0]
    manager = manager_from(ctx.services)
    path = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0"
    base = manager.ensure_loaded(model.ref).get_submodule(path).weight.detach().clone()
    with result.outputs[0].use(manager) as unet:
        assert torch.allclose(unet.get_submodule(path).weight, base + STRENGTH * up @ down, atol=1e-6)
    # At strength 0 nothing is applied, nothing is an error, and the report says so.
    zero = LoraLoader().run(ctx, model=model, clip=clip, lora_name=name, strength_model=0.0, strength_clip=0.0)
    assert zero.outputs[0] is model and zero.ui["text"] == ["LoRA processor.safetensors: not applied here: UNet"]


@pytest.mark.parametrize("part, value, problem", [
    ("alpha", torch.tensor([2.0, 3.0]), "attn1_to_q.alpha has shape [2], not one number"),
    ("alpha", torch.tensor(float("nan")), "attn1_to_q.alpha holds NaN or infinite values"),
    ("lora_up.weight", torch.full((32, 2), float("inf")), "attn1_to_q.lora_up.weight holds NaN or infinite values"),
    ("lora_up.weight", rand(32, 3), "attn1_to_q: its lora tensors do not combine (down [2, 32], up [32, 3])"),
])
def test_a_damaged_module_is_refused_by_the_loader_naming_the_key(ctx: Context, part: str, value: torch.Tensor,
                                                                   problem: str) -> None:
    """Found broken: these raised bare torch/Python errors, or (NaN, inf) loaded and made black images."""
    state = {f"lora_unet_{BLOCK}attn1_to_q.lora_up.weight": rand(32, 2),
             f"lora_unet_{BLOCK}attn1_to_q.lora_down.weight": rand(2, 32),
             f"lora_unet_{BLOCK}attn1_to_q.{part}": value}
    with pytest.raises(ModelFileError) as info:
        run_lora(ctx, write(ctx, "damaged.safetensors", state))
    assert str(info.value).startswith("LoRA damaged.safetensors is damaged: 1 UNet module(s) cannot be applied")
    assert problem in str(info.value)


@pytest.mark.parametrize("config, problem", [
    ({"unet.r": 0, "unet.lora_alpha": 8}, "r is 0, not a positive whole number"),
    ({"unet.r": 4, "unet.lora_alpha": "eight"}, "lora_alpha is 'eight', not a number"),
    ({"unet.r": 4, "unet.lora_alpha": None}, "lora_alpha is None, not a number"),
    ({"unet.r": 4, "unet.lora_alpha": 8, "unet.alpha_pattern": ["to_q"]}, "alpha_pattern is ['to_q']"),
    ({"unet.r": 4, "unet.lora_alpha": 8, "unet.rank_pattern": {"to_q": 2.5}}, "rank_pattern['to_q'] is 2.5"),
    ({"unet.r": 4, "unet.lora_alpha": 8, "unet.alpha_pattern": {"to_q[": 2}},
     "alpha_pattern has the pattern 'to_q[', not a regular expression"),
])
def test_unusable_peft_config_values_are_named(ctx: Context, config: dict, problem: str) -> None:
    """Found broken: r 0, a non-numeric alpha, a pattern list or a bad regex raised
    ZeroDivisionError, ValueError, AttributeError or re.error from the loader."""
    attn = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    state = {f"{attn}.lora_A.weight": rand(4, 32), f"{attn}.lora_B.weight": rand(32, 4)}
    name = write(ctx, "peft-bad.safetensors", state, {"lora_adapter_metadata": json.dumps(config)})
    with pytest.raises(ModelFileError) as info:
        run_lora(ctx, name)
    assert str(info.value).startswith("peft-bad.safetensors: its lora_adapter_metadata metadata for the UNet")
    assert problem in str(info.value)


def test_a_text_encoder_lora_at_clip_strength_0_is_skipped_not_refused(ctx: Context) -> None:
    """Found broken: strength_clip 0 on a text-encoder-only LoRA failed the run with "matches no
    module of this model", unlike strength 0 everywhere else."""
    te_q = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    name = write(ctx, "te-only.safetensors", {f"{te_q}.lora_up.weight": rand(32, 2),
                                              f"{te_q}.lora_down.weight": rand(2, 32)})
    model, clip, result = run_lora(ctx, name, strength_clip=0.0)
    assert result.outputs[0] is model and result.ui["text"] == ["LoRA te-only.safetensors: not applied here: text encoder"]
    only = LoraLoaderModelOnly().run(ctx, model=model, lora_name=name, strength_model=1.0)
    assert only.ui["text"] == ["LoRA te-only.safetensors: not applied here: text encoder"]
