"""Tiny random-weight SD1.x and SDXL checkpoints (single files in the original key layout, and
the same weights as diffusers folders) and a standalone VAE, for the diffusion nodes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from nodes.diffusion.families import SD15, SDXL, family
from nodes.infra import ldm_keys
from nodes.infra.files import METADATA_KEY, save_safetensors
from nodes.infra.tokenizer import TINY_TOKENIZER, tiny_vocab

TINY_VOCAB = len(tiny_vocab()[0])
_BOS, _EOS = TINY_VOCAB - 2, TINY_VOCAB - 1


def tiny_text_config(*, projection: bool, act: str) -> dict[str, Any]:
    return {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 3,
            "max_position_embeddings": 77, "vocab_size": TINY_VOCAB, "hidden_act": act,
            "projection_dim": 32, "bos_token_id": _BOS, "eos_token_id": _EOS, "pad_token_id": _EOS,
            "layer_norm_eps": 1e-5, "model_type": "clip_text_model",
            "architectures": ["CLIPTextModelWithProjection" if projection else "CLIPTextModel"]}


TINY_VAE: dict[str, Any] = {
    "act_fn": "silu", "block_out_channels": [32, 32, 32, 32], "in_channels": 3, "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 32, "sample_size": 64}

TINY_SD15_UNET: dict[str, Any] = {
    "block_out_channels": [32, 64], "layers_per_block": 1, "cross_attention_dim": 32, "attention_head_dim": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "in_channels": 4, "out_channels": 4, "norm_num_groups": 32, "sample_size": 8}

TINY_SDXL_UNET: dict[str, Any] = {
    "block_out_channels": [32, 64], "layers_per_block": 1, "cross_attention_dim": 64, "attention_head_dim": [2, 4],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": [1, 2], "use_linear_projection": True, "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 6 * 8 + 32,
    "in_channels": 4, "out_channels": 4, "norm_num_groups": 32, "sample_size": 8}


# -- SD-style checkpoints -----------------------------------------------------------------------

def tiny_sd15(seed: int) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    te_cfg = tiny_text_config(projection=False, act="quick_gelu")
    vae_cfg = dict(TINY_VAE, scaling_factor=0.18215)
    return {"family": SD15.name, "unet": UNet2DConditionModel(**TINY_SD15_UNET), "vae": AutoencoderKL(**vae_cfg),
            "text_encoders": [CLIPTextModel(CLIPTextConfig(**te_cfg))], "te_configs": [te_cfg]}


def tiny_sdxl(seed: int) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    te1 = tiny_text_config(projection=False, act="quick_gelu")
    te2 = tiny_text_config(projection=True, act="gelu")
    vae_cfg = dict(TINY_VAE, scaling_factor=0.13025)
    return {"family": SDXL.name, "unet": UNet2DConditionModel(**TINY_SDXL_UNET), "vae": AutoencoderKL(**vae_cfg),
            "text_encoders": [CLIPTextModel(CLIPTextConfig(**te1)), CLIPTextModelWithProjection(CLIPTextConfig(**te2))],
            "te_configs": [te1, te2]}


def family_spec(models: dict[str, Any]) -> dict[str, Any]:
    name = models["family"]
    base = family(name).shipped_config()
    spec = {"family": name, "unet": plain_config(models["unet"]), "vae": plain_config(models["vae"]),
            "scheduler": base["scheduler"], "tokenizer_name": TINY_TOKENIZER}
    for key, cfg in zip(("text_encoder", "text_encoder_2"), models["te_configs"]):
        spec[key] = cfg
    for key in ("tokenizer", "tokenizer_2", "force_zeros_for_empty_prompt"):
        if key in base:
            spec[key] = base[key]
    return spec


def plain_config(module: Any) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in dict(module.config).items() if not k.startswith("_")}))


def single_file_state(models: dict[str, Any], spec: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The models' weights in the original single-file layout (every part under its LDM prefix)."""
    unet, vae, tes = models["unet"], models["vae"], models["text_encoders"]
    state = ldm_keys.prefixed(ldm_keys.unet_to_ldm(unet.state_dict(), spec["unet"]), ldm_keys.UNET_PREFIX)
    if vae_state := vae.state_dict():  # a parameter-free VAE (the pixel family's) has no keys
        state.update(ldm_keys.prefixed(ldm_keys.vae_to_ldm(vae_state, spec["vae"]), ldm_keys.VAE_PREFIX))
    for te, encoder in zip(family(models["family"]).text_encoders, tes):
        te_state = _hf_te_state(encoder)
        state.update(ldm_keys.prefixed(ldm_keys.openclip_from_hf(te_state) if te.layout == "openclip" else te_state,
                                       te.ldm_prefix))
    return state


def save_family(root: Path, name: str, models: dict[str, Any], tokenizer_dir: Path) -> list[Path]:
    spec = family_spec(models)
    single = root / "checkpoints" / f"{name}.safetensors"
    save_safetensors(single_file_state(models, spec), single, {METADATA_KEY: json.dumps(spec)})
    folder = root / "diffusers" / name
    _save_pipeline_folder(folder, models, spec, tokenizer_dir)
    return [single, folder]


def text_model_name(name: str) -> str:
    """The classic ``text_model.``-prefixed name real files use (transformers 5 dropped the
    prefix from CLIPTextModel's own module names)."""
    return name if name.startswith(("text_model.", "text_projection")) else "text_model." + name


def _hf_te_state(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {text_model_name(k): v for k, v in encoder.state_dict().items()}


def _save_pipeline_folder(folder: Path, models: dict[str, Any], spec: dict[str, Any], tokenizer_dir: Path) -> None:
    import diffusers

    from nodes.infra.tokenizer import load_tokenizer

    if folder.exists():
        shutil.rmtree(folder)
    fam = family(models["family"])
    # The pipeline's own scheduler class, as the published model_index names it.
    scheduler = getattr(diffusers, spec["scheduler"]["_class_name"]).from_config(spec["scheduler"])
    components: dict[str, Any] = {"vae": models["vae"], "unet": models["unet"], "scheduler": scheduler}
    for te, encoder in zip(fam.text_encoders, models["text_encoders"]):
        tokenizer_key = te.part.replace("text_encoder", "tokenizer")
        components[te.part] = encoder
        components[tokenizer_key] = load_tokenizer(str(tokenizer_dir), spec[tokenizer_key]["pad_token"])
    if not fam.size_conditioning:  # the SD1/SD2 pipeline's optional safety parts, left out
        components.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    getattr(diffusers, fam.pipeline)(**components).save_pretrained(folder, safe_serialization=True)


def save_vae(root: Path, seed: int) -> Path:
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(**dict(TINY_VAE, scaling_factor=0.18215))
    config = plain_config(vae)
    state = ldm_keys.vae_to_ldm(vae.state_dict(), config)
    return save_safetensors(state, root / "vae" / "tiny-vae.safetensors", {METADATA_KEY: json.dumps({"vae": config})})
