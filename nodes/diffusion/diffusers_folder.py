"""Components of a diffusers pipeline folder (``model_index.json``), loaded offline with diffusers'
and transformers' own ``from_pretrained``, as folders are saved today: tokenizers written by
transformers 5 (``tokenizer.json`` + ``tokenizer_config.json``) and components holding only
variant files (``*.fp16.safetensors``). Each part is loaded in the dtype the model manager keeps
it in.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from nodes.diffusion.checkpoint import Components, ModelFileError, PartDtypes
from nodes.diffusion.families import DEFAULT_FAMILY, STANDARD_FAMILIES, FamilySpec


def _folder_family(index: dict[str, Any], unet_cfg: dict[str, Any]) -> FamilySpec:
    """By its text encoders; among one-encoder families, per-level head counts mean SD2's 64-wide heads."""
    count = sum(1 for key in index if key.startswith("text_encoder"))
    candidates = [f for f in STANDARD_FAMILIES if len(f.text_encoders) == count]
    if len(candidates) > 1:
        head_dim_64 = isinstance(unet_cfg.get("attention_head_dim"), list)
        candidates = [f for f in candidates if f.head_dim_64 == head_dim_64] or candidates
    return candidates[0] if candidates else DEFAULT_FAMILY


_WEIGHTS = r"(?:diffusion_pytorch_model|model|pytorch_model)"
_VARIANT_FILE = re.compile(_WEIGHTS + r"(?:\.safetensors\.index|\.bin\.index)?\.(\w+)(?:-\d+-of-\d+)?\.(?:safetensors|bin|json)")


def weights_variant(folder: Path) -> str | None:
    """None when a component folder holds plain weight files, else the variant its files carry
    (``fp16`` of ``diffusion_pytorch_model.fp16.safetensors``; fp16 first when there are several),
    as ``from_pretrained(variant=…)`` wants it."""
    names = [p.name for p in Path(folder).iterdir()] if Path(folder).is_dir() else []
    if any(re.fullmatch(_WEIGHTS + r"(?:-\d+-of-\d+)?\.(?:safetensors|bin)(?:\.index\.json)?", n) for n in names):
        return None
    variants = sorted({m.group(1) for n in names if (m := _VARIANT_FILE.fullmatch(n))} - {"index"})
    return "fp16" if "fp16" in variants else (variants[0] if variants else None)


def _folder_pad(directory: Path, default: str) -> str:
    """The pad token a diffusers tokenizer folder names (special_tokens_map.json as transformers 4
    saved it, tokenizer_config.json as transformers 5 does), else the family's."""
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        file = directory / name
        pad = json.loads(file.read_text()).get("pad_token") if file.is_file() else None
        if isinstance(pad, dict):
            pad = pad.get("content")
        if isinstance(pad, str):
            return pad
    return default


def load_diffusers_folder(folder: Path, *, parts: tuple[str, ...] = ("unet", "vae", "clip"),
                          dtypes: PartDtypes | None = None) -> Components:
    """Components of a diffusers pipeline folder (model_index.json), loaded offline, each part in
    its dtype from ``dtypes`` (default fp32) whatever the files hold; component folders holding
    only variant files (``*.fp16.safetensors``) load from those."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(folder)
    dtypes = dtypes or {}
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise ModelFileError(f"{folder} is not a diffusers folder (no model_index.json)")
    index = json.loads(index_file.read_text())
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    unet_cfg = json.loads((folder / "unet" / "config.json").read_text())
    fam = _folder_family(index, unet_cfg)
    spec: dict[str, Any] = {"family": fam.name, "scheduler": scheduler, "unet": unet_cfg}
    comp = Components(family=fam.name, spec=spec)

    def opts(part: str) -> dict[str, Any]:
        return {"subfolder": part, "local_files_only": True, "variant": weights_variant(folder / part)}

    if "unet" in parts:
        comp.unet = UNet2DConditionModel.from_pretrained(folder, torch_dtype=dtypes.get("unet", torch.float32),
                                                         **opts("unet"))
    if "vae" in parts:
        comp.vae = AutoencoderKL.from_pretrained(folder, torch_dtype=dtypes.get("vae", torch.float32), **opts("vae"))
        spec["vae"] = dict(comp.vae.config)
    if "clip" in parts:
        for te in fam.text_encoders:
            cls = CLIPTextModelWithProjection if te.projection else CLIPTextModel
            comp.text_encoders.append(cls.from_pretrained(folder, dtype=dtypes.get(te.part, torch.float32),
                                                          **opts(te.part)))
            tokenizer = te.part.replace("text_encoder", "tokenizer")
            comp.tokenizer_dirs.append(folder / tokenizer)
            spec[tokenizer] = {"pad_token": _folder_pad(folder / tokenizer, te.pad_token)}
    spec["force_zeros_for_empty_prompt"] = bool(index.get("force_zeros_for_empty_prompt", False))
    return comp
