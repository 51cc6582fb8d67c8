"""SD2.x single files: v-prediction told from epsilon as ComfyUI tells them, the OpenCLIP text
encoder converted to transformers' CLIPTextModel and conditioning on the penultimate layer as
the original (LDM FrozenOpenCLIPEmbedder) computes it, and sampling as diffusers' pipeline."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from nodes.diffusion.checkpoint import ModelFileError, load_checkpoint
from nodes.diffusion.single_file import prediction_type_of, read_sidecar
from nodes.diffusion.families import SD15, SD21
from nodes.diffusion.nodes_conditioning import CLIPTextEncode
from nodes.diffusion.nodes_model import ModelSamplingDiscrete
from nodes.diffusion.zoo.sd import TINY_VOCAB, tiny_text_config
from nodes.infra import ldm_keys

from diffusion_helpers import NEGATIVE, POSITIVE, ksample, load, pipeline, to_image, txt2img

PREFIX = ldm_keys.SD2_OPENCLIP_PREFIX


def _bare(zoo_root: Path, tmp_path: Path, name: str) -> Path:
    """The zoo file without our metadata: what a downloaded checkpoint is."""
    bare = tmp_path / f"{name}.safetensors"
    save_file(load_file(str(zoo_root / "checkpoints" / f"{name}.safetensors")), str(bare))
    return bare


@pytest.mark.parametrize("name, expected", [("tiny-sd2-v", "v_prediction"), ("tiny-sd2-eps", "epsilon")])
def test_prediction_type_detected_from_the_weights(zoo_root: Path, tmp_path: Path, name: str, expected: str) -> None:
    comp = load_checkpoint(_bare(zoo_root, tmp_path, name), tokenizer_root=lambda n: zoo_root / "clip_tokenizer" / n)
    assert comp.family == "sd21"
    assert comp.spec["scheduler"]["prediction_type"] == expected


def test_prediction_type_rules_at_full_size() -> None:
    """ComfyUI's check reads output_blocks.11 of full-size files; a sidecar yaml overrides it; SD2
    inpainting (9 channels) and SD1 are epsilon whatever the weights."""
    key = ldm_keys.UNET_PREFIX + "output_blocks.{}.1.transformer_blocks.0.norm1.bias"
    wide, narrow = torch.randn(320) * 0.2, torch.randn(320) * 0.01
    conv4 = {ldm_keys.UNET_PREFIX + "input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)}
    conv9 = {ldm_keys.UNET_PREFIX + "input_blocks.0.0.weight": torch.zeros(320, 9, 3, 3)}
    v_file = {**conv4, key.format(11): wide, key.format(5): narrow}
    assert prediction_type_of(v_file, SD21, None) == "v_prediction"
    assert prediction_type_of({**conv4, key.format(11): narrow, key.format(5): wide}, SD21, None) == "epsilon"
    assert prediction_type_of({**v_file, **conv9}, SD21, None) == "epsilon"
    assert prediction_type_of(v_file, SD15, None) == "epsilon"
    assert prediction_type_of(v_file, SD21, {"model": {"params": {}}}) == "epsilon"
    assert prediction_type_of({}, SD21, {"model": {"params": {"parameterization": "v"}}}) == "v_prediction"


def _openclip_reference(zoo_root: Path, ids: torch.Tensor, skip: int = 1) -> torch.Tensor:
    """LDM's FrozenOpenCLIPEmbedder(layer="penultimate") on open_clip's own CLIP built from the
    file's ``cond_stage_model.model.*`` tensors: all blocks but the last ``skip``, then ln_final."""
    import open_clip

    sd = load_file(str(zoo_root / "checkpoints" / "tiny-sd2-v.safetensors"))
    tower = {k[len(PREFIX):]: v for k, v in sd.items() if k.startswith(PREFIX)}
    model = open_clip.model.CLIP(
        embed_dim=32, vision_cfg=open_clip.model.CLIPVisionCfg(layers=1, width=32, head_width=32, patch_size=16,
                                                             image_size=32),
        text_cfg=open_clip.model.CLIPTextCfg(vocab_size=TINY_VOCAB, width=32, heads=4, layers=4, mlp_ratio=2.0))
    result = model.load_state_dict(tower, strict=False)
    assert not result.unexpected_keys and all(k.startswith("visual.") for k in result.missing_keys)
    model.transformer.resblocks = model.transformer.resblocks[:-skip]
    with torch.no_grad():
        x = model.token_embedding(ids) + model.positional_embedding
        return model.ln_final(model.transformer(x, attn_mask=model.attn_mask))


def test_text_encoder_matches_openclip_penultimate_layer(make_ctx, zoo_root: Path) -> None:
    ctx = make_ctx()
    _, clip, _ = load(ctx, "tiny-sd2-v.safetensors")
    ours = CLIPTextEncode().run(ctx, text=POSITIVE, clip=clip)[0][0][0]
    chunks, _ = clip.tokenize(POSITIVE)
    ids = torch.tensor([[t for t, _ in chunks[0]]])
    assert clip.tokenizers()[0].convert_ids_to_tokens(int(ids[0, -1])) == "!"  # SD2 pads with "!"
    assert (ours - _openclip_reference(zoo_root, ids)).abs().max() < 1e-5
    # CLIPSetLastLayer counts the file's blocks, as ComfyUI: -2 is SD2's own penultimate layer.
    for layer, skip in ((-2, 1), (-3, 2)):
        skipped = CLIPTextEncode().run(ctx, text=POSITIVE, clip=replace(clip, layer=layer))[0][0][0]
        assert (skipped - _openclip_reference(zoo_root, ids, skip)).abs().max() < 1e-5


def test_text_encoder_conversion_matches_diffusers(zoo_root: Path) -> None:
    """Our OpenCLIP -> transformers renaming gives diffusers' single-file converter's tensors."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    sd = load_file(str(zoo_root / "checkpoints" / "tiny-sd2-v.safetensors"))
    ours = ldm_keys.hf_from_openclip({k[len(PREFIX):]: v for k, v in sd.items() if k.startswith(PREFIX)})
    config = CLIPTextConfig(**dict(tiny_text_config(projection=False, act="gelu"), num_hidden_layers=4))
    theirs = convert_open_clip_checkpoint(CLIPTextModel(config), sd)
    # SD2 conditions on hidden states: neither side's model uses the projection.
    ours = {k.removeprefix("text_model."): v for k, v in ours.items() if k != "text_projection.weight"}
    theirs = {k.removeprefix("text_model."): v for k, v in theirs.items()}
    assert len(ours) == 4 + 16 * 4
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize("ckpt", ["tiny-sd2-v.safetensors", "tiny-sd2-eps.safetensors"])
def test_txt2img_matches_pipeline(make_ctx, ckpt: str) -> None:
    ctx = make_ctx()
    image = txt2img(ctx, ckpt)
    model, clip, vae = load(ctx, ckpt)
    pipe = pipeline(ctx, model, clip, vae, "txt2img")
    assert pipe.scheduler.config.prediction_type == model.scheduler_config["prediction_type"]
    ref = pipe(POSITIVE, negative_prompt=NEGATIVE, height=64, width=64, num_inference_steps=4, guidance_scale=7.0,
               generator=torch.Generator().manual_seed(42), output_type="pt").images
    assert (image - to_image(ref)).abs().max() < 1e-4


def as_v_model(ctx, model):
    return ModelSamplingDiscrete().run(ctx, model=model, sampling="v_prediction", zsnr=False)[0]


def test_model_sampling_discrete_overrides_the_detection(make_ctx) -> None:
    ctx = make_ctx()
    model, clip, _ = load(ctx, "tiny-sd2-v.safetensors")
    assert model.scheduler_config["prediction_type"] == "v_prediction"
    for sampling, expected in (("eps", "epsilon"), ("v_prediction", "v_prediction"), ("x0", "sample")):
        patched = ModelSamplingDiscrete().run(ctx, model=model, sampling=sampling, zsnr=False)[0]
        assert patched.scheduler_config["prediction_type"] == expected
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    as_eps = ModelSamplingDiscrete().run(ctx, model=model, sampling="eps", zsnr=False)[0]
    as_v = ksample(ctx, model, clip, latent, steps=2)["samples"]
    assert (ksample(ctx, as_eps, clip, latent, steps=2)["samples"] - as_v).abs().max() > 0.1
    zsnr = ModelSamplingDiscrete().run(ctx, model=model, sampling="v_prediction", zsnr=True)[0]
    assert torch.isfinite(ksample(ctx, zsnr, clip, latent, steps=2)["samples"]).all()
    # The rescaled schedule goes in as trained_betas, which every diffusers scheduler honours.
    with_zsnr = ksample(ctx, zsnr, clip, latent, sampler="heun", steps=2)["samples"]
    without = ksample(ctx, as_v_model(ctx, model), clip, latent, sampler="heun", steps=2)["samples"]
    assert torch.isfinite(with_zsnr).all() and (with_zsnr - without).abs().max() > 1e-3


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpm_2", "dpm_2_ancestral", "dpmpp_sde"])
def test_x0_prediction_on_a_sampler_without_it_is_refused_before_sampling(make_ctx, sampler: str) -> None:
    """diffusers' ancestral/KDPM2/SDE schedulers raise a bare NotImplementedError from inside their
    first step; the UNet must not run and the message must name the sampler and the override."""
    ctx = make_ctx()
    model, clip, _ = load(ctx, "tiny-sd2-eps.safetensors")
    x0 = ModelSamplingDiscrete().run(ctx, model=model, sampling="x0", zsnr=False)[0]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    with pytest.raises(ValueError, match=f"'{sampler}'.*predicting x0 .ModelSamplingDiscrete sampling=x0"):
        ksample(ctx, x0, clip, latent, sampler=sampler, steps=2)
    assert torch.isfinite(ksample(ctx, x0, clip, latent, sampler="euler", steps=2)["samples"]).all()


@pytest.mark.parametrize("name", ["tiny-sd2-v", "tiny-sd2-eps", "tiny-sd15-inpainting"])
def test_file_without_metadata_builds_the_same_models(zoo_root: Path, tmp_path: Path, name: str) -> None:
    """What a downloaded file is: architecture from the shapes alone (9 input channels included)."""
    tok = lambda n: zoo_root / "clip_tokenizer" / n  # noqa: E731
    bare = load_checkpoint(_bare(zoo_root, tmp_path, name), tokenizer_root=tok)
    described = load_checkpoint(zoo_root / "checkpoints" / f"{name}.safetensors", tokenizer_root=tok)
    for a, b in [(bare.unet, described.unet), (bare.vae, described.vae),
                 *zip(bare.text_encoders, described.text_encoders)]:
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert bare.unet.config.in_channels == described.unet.config.in_channels
    if name.startswith("tiny-sd2"):  # SD2's 64-wide heads follow from the shapes (SD1's fixed 8 do not)
        assert bare.unet.config.attention_head_dim == described.unet.config.attention_head_dim


@pytest.mark.parametrize("text, reason", [
    ("model: [unclosed", r"cannot read the sidecar config v1\.yaml: expected ',' or '\]'.*line 1"),
    (b"\xff\xfe bad", r"cannot read the sidecar config v1\.yaml: 'utf-8' codec"),
    ("- a\n- b", r"v1\.yaml is not an LDM config"),
    ("model:\n  params: v", r"v1\.yaml is not an LDM config"),
    ("nodeloom_tokenizer: 5", r"v1\.yaml: nodeloom_tokenizer must be a folder name"),
])
def test_broken_sidecar_config_names_the_file(tmp_path: Path, text: str | bytes, reason: str) -> None:
    """The sidecar .yaml is what users write by hand to fix a detection: a mistake in it is a
    clear error naming it, not a parser traceback or an AttributeError."""
    sidecar = tmp_path / "v1.yaml"
    sidecar.write_bytes(text) if isinstance(text, bytes) else sidecar.write_text(text)
    with pytest.raises(ModelFileError, match=reason):
        read_sidecar(sidecar)
    assert read_sidecar(_write(tmp_path / "ok.yaml", "model:\n  params:\n    parameterization: v\n"))[
        "model"]["params"]["parameterization"] == "v"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
