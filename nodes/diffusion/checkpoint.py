"""Telling SD1.x / SD2.x / SDXL apart (by the family data in ``families``) and building the diffusers
components (UNet, VAE, text encoders) from single-file checkpoints or diffusers folders, offline.

Architecture comes, in order, from: a ``nodeloom_config`` JSON in the safetensors metadata (the
tiny zoo writes one), a sidecar ``.yaml`` next to the file (the original LDM config A1111/ComfyUI
accept), or the shipped config of the detected family corrected by the tensor shapes (so channel
and depth variants load too). Keys are converted with diffusers' own single-file converters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nodes.diffusion.families import DEFAULT_FAMILY, FAMILIES, FamilySpec, family, family_of_keys
from nodes.diffusion.single_file import prediction_type_of, read_sidecar
from nodes.infra import ldm_keys
from nodes.infra.files import METADATA_KEY, ModelFileError, build_module, read_metadata, read_state_dict
from nodes.infra.tokenizer import DEFAULT_TOKENIZER

Tensor = torch.Tensor
# Part name ("unet", "vae", "text_encoder", "text_encoder_2") -> the dtype it is loaded in; fp32 if absent.
PartDtypes = Mapping[str, torch.dtype]
__all__ = ["METADATA_KEY", "Components", "ModelFileError", "PartDtypes", "detect_family", "load_checkpoint",
           "load_diffusers_folder", "load_vae_file", "read_state_dict", "tokenizer_name"]


@dataclass
class Components:
    """What one checkpoint provides; any part may be absent (a UNet-only file has no VAE)."""

    family: str
    spec: dict[str, Any]
    unet: torch.nn.Module | None = None
    vae: torch.nn.Module | None = None
    text_encoders: list[torch.nn.Module] = field(default_factory=list)
    # Folders holding vocab.json/merges.txt, one per text encoder.
    tokenizer_dirs: list[Path] = field(default_factory=list)


def detect_family(keys: set[str] | list[str]) -> str:
    """The family of a single file, from which text encoder layout it carries (a UNet-only file:
    SDXL when the UNet has the class-label embedding of its size conditioning)."""
    keys = set(keys)
    found = family_of_keys(keys)
    if found is not None:
        return found.name
    if any(k.startswith(ldm_keys.SDXL_OPENCLIP_PREFIX) for k in keys):
        raise ModelFileError("SDXL refiner checkpoints (OpenCLIP only) are not supported")
    if ldm_keys.UNET_PREFIX + "input_blocks.0.0.weight" in keys:
        if ldm_keys.UNET_PREFIX + "label_emb.0.0.weight" in keys:
            return next(f.name for f in FAMILIES.values() if f.size_conditioning)
        return DEFAULT_FAMILY.name
    raise ModelFileError("not a Stable Diffusion checkpoint: no model.diffusion_model.* keys "
                         "(SD1.x, SD2.x and SDXL single files are supported)")


# -- architecture from shapes -------------------------------------------------------------------

def _indices(keys: list[str], pattern: str) -> set[int]:
    regex = re.compile(pattern)
    return {int(m.group(1)) for k in keys if (m := regex.match(k))}


def infer_unet_config(sd: dict[str, Tensor], base: dict[str, Any], *, pooled_dim: int | None) -> dict[str, Any]:
    """Correct a family's UNet config with what the LDM-layout tensors say (no prefix)."""
    cfg = dict(base)
    keys = list(sd)
    conv_in = sd["input_blocks.0.0.weight"]
    levels = len(_indices(keys, r"input_blocks\.(\d+)\.0\.op\.weight")) + 1
    n_input = max(_indices(keys, r"input_blocks\.(\d+)\.")) + 1
    per = n_input // levels - 1
    channels, attention, depth = [], [], []
    for i in range(levels):
        block = (per + 1) * i + 1
        channels.append(int(sd[f"input_blocks.{block}.0.out_layers.3.weight"].shape[0]))
        attn = _indices(keys, rf"input_blocks\.{block}\.1\.transformer_blocks\.(\d+)\.")
        attention.append(bool(attn))
        depth.append(len(attn) or 1)
    cfg.update(in_channels=int(conv_in.shape[1]), out_channels=int(sd["out.2.weight"].shape[0]),
               block_out_channels=channels, layers_per_block=per)
    cfg["down_block_types"] = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention]
    cfg["up_block_types"] = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)]
    attn_key = next((k for k in keys if k.endswith("attn2.to_k.weight")), None)
    if attn_key is not None:
        cfg["cross_attention_dim"] = int(sd[attn_key].shape[1])
        proj = next(k for k in keys if k.endswith(".proj_in.weight"))
        cfg["use_linear_projection"] = sd[proj].ndim == 2
    if "transformer_layers_per_block" in base or any(d > 1 for d in depth):
        cfg["transformer_layers_per_block"] = depth
    if isinstance(base.get("attention_head_dim"), list) or base["family_heads"] == "head_dim_64":
        cfg["attention_head_dim"] = [max(1, c // 64) for c in channels]
    label = sd.get("label_emb.0.0.weight")
    if label is not None and pooled_dim is not None:
        cfg["projection_class_embeddings_input_dim"] = int(label.shape[1])
        cfg["addition_time_embed_dim"] = (int(label.shape[1]) - pooled_dim) // 6
    cfg.pop("family_heads", None)
    return cfg


def infer_vae_config(sd: dict[str, Tensor], base: dict[str, Any]) -> dict[str, Any]:
    keys = list(sd)
    levels = max(_indices(keys, r"encoder\.down\.(\d+)\.")) + 1
    per = max(_indices(keys, r"encoder\.down\.0\.block\.(\d+)\.")) + 1
    channels = [int(sd[f"encoder.down.{i}.block.0.conv2.weight"].shape[0]) for i in range(levels)]
    cfg = dict(base)
    cfg.update(block_out_channels=channels, layers_per_block=per,
               latent_channels=int(sd["quant_conv.weight"].shape[0]) // 2,
               down_block_types=["DownEncoderBlock2D"] * levels, up_block_types=["UpDecoderBlock2D"] * levels)
    return cfg


def infer_clip_config(sd: dict[str, Tensor], base: dict[str, Any]) -> dict[str, Any]:
    """Correct a text encoder config from transformers-layout tensors."""
    cfg = dict(base)
    vocab, hidden = sd["text_model.embeddings.token_embedding.weight"].shape
    layers = len(_indices(list(sd), r"text_model\.encoder\.layers\.(\d+)\."))
    if hidden != base["hidden_size"]:
        cfg["num_attention_heads"] = max(1, hidden // 64)
    cfg.update(vocab_size=int(vocab), hidden_size=int(hidden), num_hidden_layers=layers,
               intermediate_size=int(sd["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
               max_position_embeddings=int(sd["text_model.embeddings.position_embedding.weight"].shape[0]))
    if "text_projection.weight" in sd:
        cfg["projection_dim"] = int(sd["text_projection.weight"].shape[0])
    return cfg


# -- single-file checkpoints --------------------------------------------------------------------

def checkpoint_spec(path: Path, sd: dict[str, Tensor], metadata: dict[str, str]) -> dict[str, Any]:
    """The architecture spec of a single-file checkpoint (see the module docstring for the order)."""
    if METADATA_KEY in metadata:
        spec = json.loads(metadata[METADATA_KEY])
        spec.setdefault("scheduler", family(spec["family"]).scheduler_defaults)
        return spec
    fam = family(detect_family(sd.keys()))
    spec = fam.shipped_config()
    sidecar = Path(path).with_suffix(".yaml")
    original = None
    if sidecar.is_file():
        original = read_sidecar(sidecar)
        spec["tokenizer_name"] = tokenizer_name(path, metadata)
    spec["scheduler"] = dict(spec["scheduler"], prediction_type=prediction_type_of(sd, fam, original))
    spec["original_config"] = original
    return spec


def tokenizer_name(path: Path, metadata: dict[str, str] | None = None) -> str:
    """The clip_tokenizer folder a single file asks for: its ``nodeloom_config`` metadata (the
    tiny zoo), ``nodeloom_tokenizer`` in its sidecar .yaml, else the default (OpenAI CLIP's, which
    every SD1.x/SD2.x/SDXL text encoder uses). Reads the file's header only."""
    metadata = read_metadata(path) if metadata is None else metadata
    if METADATA_KEY in metadata:
        return str(json.loads(metadata[METADATA_KEY]).get("tokenizer_name") or DEFAULT_TOKENIZER)
    sidecar = Path(path).with_suffix(".yaml")
    if sidecar.is_file():
        return str(read_sidecar(sidecar).get("nodeloom_tokenizer") or DEFAULT_TOKENIZER)
    return DEFAULT_TOKENIZER


def _part_prefixes() -> list[tuple[str, str]]:
    """(key prefix, part) of every module a single file of any family holds."""
    pairs = [(ldm_keys.UNET_PREFIX, "unet"), (ldm_keys.VAE_PREFIX, "vae")]
    pairs += [(te.ldm_prefix, te.part) for fam in FAMILIES.values() for te in fam.text_encoders]
    return pairs


def _dtype_of_key(dtypes: PartDtypes) -> Callable[[str], torch.dtype | None]:
    prefixes = _part_prefixes()

    def rule(key: str) -> torch.dtype | None:
        part = next((p for prefix, p in prefixes if key.startswith(prefix)), None)
        return dtypes.get(part, torch.float32) if part else None
    return rule


def _is_model_key(key: str) -> bool:
    return any(key.startswith(prefix) for prefix, _ in _part_prefixes())


def load_checkpoint(path: Path, *, tokenizer_root: Callable[[str], Path],
                    parts: tuple[str, ...] = ("unet", "vae", "clip"), dtypes: PartDtypes | None = None) -> Components:
    """Build the requested parts of a single-file SD1.x/SD2.x/SDXL checkpoint, each in its dtype
    from ``dtypes`` (default fp32). The tokenizer is looked up first, so a missing one is reported
    before the weights are read."""
    dtypes = dtypes or {}
    tokenizer_folder = tokenizer_root(tokenizer_name(path)) if "clip" in parts else None
    sd, metadata = read_state_dict(path, dtype=_dtype_of_key(dtypes), keep=_is_model_key)
    spec = checkpoint_spec(path, sd, metadata)
    fam = family(spec["family"])
    name = Path(path).name
    comp = Components(family=fam.name, spec=spec)
    te_states = _text_encoder_states(sd, fam)
    te_configs = [spec[te.part] if METADATA_KEY in metadata else infer_clip_config(s, spec[te.part])
                  for te, s in zip(fam.text_encoders, te_states)]
    if tokenizer_folder is not None:
        comp.text_encoders = [build_module("clip", c, s, name=name, dtype=dtypes.get(te.part, torch.float32))
                              for te, c, s in zip(fam.text_encoders, te_configs, te_states)]
        comp.tokenizer_dirs = [tokenizer_folder for _ in fam.text_encoders]
    if "unet" in parts:
        unet_cfg = spec["unet"]
        if METADATA_KEY not in metadata:
            plain = {k[len(ldm_keys.UNET_PREFIX):]: v for k, v in sd.items() if k.startswith(ldm_keys.UNET_PREFIX)}
            pooled = te_configs[-1].get("projection_dim") if fam.size_conditioning else None
            base = dict(unet_cfg, family_heads="head_dim_64" if fam.head_dim_64 else "fixed")
            unet_cfg = infer_unet_config(plain, base, pooled_dim=pooled)
            spec["unet"] = unet_cfg
        converted = ldm_keys.unet_from_ldm(sd, unet_cfg)
        comp.unet = build_module("unet", unet_cfg, converted, name=name, dtype=dtypes.get("unet", torch.float32))
    from nodes.diffusion.pixel_vae import parameter_free_vae  # diffusers' model classes: only when loading

    if "vae" in parts and (free := parameter_free_vae(spec.get("vae") or {})) is not None:
        comp.vae = free  # the pixel family's: nothing in the file, all in the config
    elif "vae" in parts and any(k.startswith(ldm_keys.VAE_PREFIX) for k in sd):
        comp.vae = load_vae_state(sd, spec["vae"], name=name, trusted_config=METADATA_KEY in metadata,
                                  dtype=dtypes.get("vae", torch.float32))
    return comp


def _text_encoder_states(sd: dict[str, Tensor], fam: FamilySpec) -> list[dict[str, Tensor]]:
    """Each text encoder's weights in transformers' layout, in the family's order."""
    states = []
    for te in fam.text_encoders:
        if te.layout == "clip":
            state = ldm_keys.clip_from_ldm(sd, te.ldm_prefix)
        else:
            tower = {k[len(te.ldm_prefix):]: v for k, v in sd.items() if k.startswith(te.ldm_prefix)}
            blocks = len(_indices(list(tower), r"transformer\.resblocks\.(\d+)\."))
            state = ldm_keys.hf_from_openclip(tower, layers=blocks - 1 if te.drop_last_block else None)
        if not te.projection:
            state.pop("text_projection.weight", None)  # the hidden states are the conditioning
        states.append(state)
    return states


def load_vae_state(sd: dict[str, Tensor], base: dict[str, Any], *, name: str,
                   trusted_config: bool = False, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A VAE from LDM-layout tensors, with or without the ``first_stage_model.`` prefix."""
    plain = {k[len(ldm_keys.VAE_PREFIX):] if k.startswith(ldm_keys.VAE_PREFIX) else k: v for k, v in sd.items()
             if k.startswith((ldm_keys.VAE_PREFIX, "encoder.", "decoder.", "quant_conv.", "post_quant_conv."))}
    config = base if trusted_config else infer_vae_config(plain, base)
    converted = ldm_keys.vae_from_ldm(plain, config)
    return build_module("vae", config, converted, name=name, dtype=dtype)


def load_vae_file(path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A standalone VAE file: LDM layout (vae-ft-mse-…, sdxl_vae) or diffusers layout."""
    sd, metadata = read_state_dict(path, dtype=torch.float32)
    if METADATA_KEY in metadata:
        config = json.loads(metadata[METADATA_KEY])["vae"]
    else:
        config = DEFAULT_FAMILY.shipped_config()["vae"]
    if any(k.startswith("encoder.down_blocks.") for k in sd):  # already diffusers layout
        return build_module("vae", config, sd, name=Path(path).name), config
    vae = load_vae_state(sd, config, name=Path(path).name, trusted_config=METADATA_KEY in metadata)
    return vae, dict(vae.config)


# -- diffusers folders --------------------------------------------------------------------------

def load_diffusers_folder(folder: Path, *, parts: tuple[str, ...] = ("unet", "vae", "clip"),
                          dtypes: PartDtypes | None = None) -> Components:
    """See :func:`nodes.diffusion.diffusers_folder.load_diffusers_folder` (kept here for callers)."""
    from nodes.diffusion.diffusers_folder import load_diffusers_folder as load

    return load(folder, parts=parts, dtypes=dtypes)
