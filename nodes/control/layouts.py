"""Key layouts and configs of ControlNet and T2I-Adapter files: which layout a state dict is in,
its renaming to diffusers' keys, and the diffusers config its tensor shapes (and a sidecar
``.yaml``) imply. See ``nodes.control.loading`` for the layouts accepted."""

from __future__ import annotations

import re
from typing import Any

import torch

from nodes.infra.files import ModelFileError

Tensor = torch.Tensor
LDM_PREFIX = "control_model."


def layout_of(sd: dict[str, Tensor]) -> str:
    """"controlnet", "controlnet_ldm", "t2i_adapter" or "t2i_adapter_original"; ModelFileError for anything else."""
    if "controlnet_cond_embedding.conv_in.weight" in sd:
        return "controlnet"
    if LDM_PREFIX + "input_hint_block.0.weight" in sd or "input_hint_block.0.weight" in sd:
        return "controlnet_ldm"
    if "adapter.conv_in.weight" in sd or "adapter.body.0.in_conv.weight" in sd:
        return "t2i_adapter"
    if "conv_in.weight" in sd and any(k.startswith("body.") for k in sd):
        return "t2i_adapter_original"
    if "body.0.in_conv.weight" in sd:
        raise ModelFileError("a light T2I-Adapter in the original (TencentARC) layout (t2iadapter_color_*): "
                             "not supported; use a diffusers release with its config.json")
    if "style_embedding" in sd:
        raise ModelFileError("a T2I style adapter (CLIP-vision tokens added to the text, not a control model): "
                             "not supported")
    raise ModelFileError("not a ControlNet or T2I-Adapter: none of controlnet_cond_embedding.*, "
                         "control_model.input_hint_block.* or adapter.* keys")


def _indices(keys: list[str], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := regex.match(k))})


def ldm_to_diffusers(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Original (``control_model.``-prefixed or bare) ControlNet keys -> diffusers'."""
    from diffusers.loaders import single_file_utils as sfu

    plain = {k.removeprefix(LDM_PREFIX): v for k, v in sd.items()}
    keys = list(plain)
    levels = len(_indices(keys, r"input_blocks\.(\d+)\.0\.op\.weight")) + 1
    per = len(_indices(keys, r"input_blocks\.(\d+)\.")) // levels - 1
    try:
        converted = sfu.convert_controlnet_checkpoint(plain, {"layers_per_block": per})
    except KeyError as exc:
        raise ModelFileError(f"incomplete original-layout ControlNet: no {_missing(exc)} tensor") from exc
    for diffusers_key, ldm_key in sfu.DIFFUSERS_TO_LDM_MAPPING["controlnet"]["addition_embed_type"].items():
        if ldm_key in plain:
            converted[diffusers_key] = plain[ldm_key]
    return {k: v for k, v in converted.items() if v is not None}


def adapter_original_to_diffusers(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Original full-adapter keys (``conv_in``, ``body.{k}.*``) -> diffusers' ``T2IAdapter`` keys.

    The original body is one flat list of levels x resnets; diffusers groups it per feature level
    (``body.{level}.resnets.{r}``) and keeps the channel-changing 1x1 ``in_conv`` of a level's first
    resnet on the level. The first level never changes channels, so the first ``in_conv`` sits at
    index ``resnets per level``."""
    keys = list(sd)
    foreign = [k for k in keys if ".skep." in k or ".down_opt." in k]
    if foreign:
        # Skip convs (sk=False) and strided-conv downsampling have no place in diffusers' FullAdapter.
        raise ModelFileError(f"original-layout T2I-Adapter with {foreign[0]!r}: a variant diffusers' "
                             "FullAdapter cannot hold (skip or downsampling convs); not supported")
    flat = _indices(keys, r"body\.(\d+)\.")
    if flat != list(range(len(flat))):
        gap = next(i for i in range(len(flat) + 1) if i not in flat)
        raise ModelFileError(f"incomplete original-layout T2I-Adapter: no body.{gap}.* block")
    changes = _indices(keys, r"body\.(\d+)\.in_conv\.weight")
    if not changes or len(flat) % changes[0]:
        raise ModelFileError(f"original-layout T2I-Adapter with {len(flat)} body blocks and in_conv at {changes}: "
                             "cannot tell its feature levels (a block missing?)")
    per = changes[0]
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key.startswith("conv_in."):
            out["adapter." + key] = value
            continue
        match = re.fullmatch(r"body\.(\d+)\.(in_conv|block1|block2)\.(weight|bias)", key)
        if match is None:
            raise ModelFileError(f"original-layout T2I-Adapter with an unexpected tensor {key!r}")
        level, r = divmod(int(match.group(1)), per)
        part, param = match.group(2), match.group(3)
        if part == "in_conv" and r:
            # Only a level's first resnet changes channels; one further in is not a FullAdapter.
            raise ModelFileError(f"original-layout T2I-Adapter with an in_conv inside a level: {key!r}")
        target = f"in_conv.{param}" if part == "in_conv" else f"resnets.{r}.{part}.{param}"
        out[f"adapter.body.{level}.{target}"] = value
    return out


def _section(mapping: Any, *keys: str) -> dict[str, Any]:
    """``mapping[k1][k2]...``, or {} where a level is missing or not a mapping (a sidecar of another kind)."""
    for key in keys:
        mapping = mapping.get(key) if isinstance(mapping, dict) else None
    return mapping if isinstance(mapping, dict) else {}


def _positive_int(params: dict[str, Any], key: str) -> int | None:
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelFileError(f"the sidecar .yaml's control_stage_config {key} is {value!r}, not a whole number")
    return value if value > 0 else None


def head_counts(channels: list[int], cross_attention_dim: int, sidecar: dict[str, Any] | None) -> int | list[int]:
    """diffusers' ``attention_head_dim`` (a head count, despite the name) for these levels."""
    params = _section(sidecar, "model", "params", "control_stage_config", "params")
    if (heads := _positive_int(params, "num_heads")) is not None:
        return heads
    if (head_channels := _positive_int(params, "num_head_channels")) is not None:
        return [max(1, c // head_channels) for c in channels]
    return 8 if cross_attention_dim == 768 else [max(1, c // 64) for c in channels]


def infer_controlnet_config(sd: dict[str, Tensor], sidecar: dict[str, Any] | None = None) -> dict[str, Any]:
    """ControlNetModel config from diffusers-layout tensors (see the module docstring for heads)."""
    try:
        return _controlnet_config(sd, sidecar)
    except (KeyError, StopIteration) as exc:
        # A tensor the shapes are read from is absent: the file is cut short or not a whole ControlNet.
        raise ModelFileError(f"incomplete ControlNet: no {_missing(exc)} tensor") from exc


def _missing(exc: Exception) -> str:
    return repr(exc.args[0]) if isinstance(exc, KeyError) and exc.args else "cross-attention (attn2) or proj_in"


def _controlnet_config(sd: dict[str, Tensor], sidecar: dict[str, Any] | None) -> dict[str, Any]:
    keys = list(sd)
    levels = len(_indices(keys, r"down_blocks\.(\d+)\."))
    per = len(_indices(keys, r"down_blocks\.0\.resnets\.(\d+)\."))
    channels = [int(sd[f"down_blocks.{i}.resnets.0.conv2.weight"].shape[0]) for i in range(levels)]
    depth = [len(_indices(keys, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.")) for i in range(levels)]
    blocks = len(_indices(keys, r"controlnet_cond_embedding\.blocks\.(\d+)\.weight"))
    embedding = [int(sd["controlnet_cond_embedding.conv_in.weight"].shape[0])]
    embedding += [int(sd[f"controlnet_cond_embedding.blocks.{2 * k + 1}.weight"].shape[0]) for k in range(blocks // 2)]
    attn_key = next(k for k in keys if k.endswith("attn2.to_k.weight"))
    cross = int(sd[attn_key].shape[1])
    proj_in = next(k for k in keys if k.endswith(".proj_in.weight"))
    config: dict[str, Any] = {
        "in_channels": int(sd["conv_in.weight"].shape[1]),
        "conditioning_channels": int(sd["controlnet_cond_embedding.conv_in.weight"].shape[1]),
        "block_out_channels": channels, "layers_per_block": per,
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depth],
        "transformer_layers_per_block": [d or 1 for d in depth],
        "conditioning_embedding_out_channels": embedding, "cross_attention_dim": cross,
        "use_linear_projection": sd[proj_in].ndim == 2,
        "attention_head_dim": head_counts(channels, cross, sidecar),
    }
    if "mid_block.attentions.0.proj_in.weight" not in sd:
        config["mid_block_type"] = "UNetMidBlock2D"
    if "add_embedding.linear_1.weight" in sd:
        # SDXL: pooled text (1280) + six size/crop numbers of 256 sinusoidal channels each.
        pooled_and_time = int(sd["add_embedding.linear_1.weight"].shape[1])
        config.update(addition_embed_type="text_time", projection_class_embeddings_input_dim=pooled_and_time,
                      addition_time_embed_dim=256)
    if "time_embedding.cond_proj.weight" in sd:
        config["time_cond_proj_dim"] = int(sd["time_embedding.cond_proj.weight"].shape[1])
    return config


def infer_adapter_config(sd: dict[str, Tensor]) -> dict[str, Any]:
    """T2IAdapter config from diffusers-layout tensors. Full SD adapters unshuffle by 8, SDXL ones
    by 16 (the only weight-visible difference between ``full_adapter`` and ``full_adapter_xl``)."""
    try:
        return _adapter_config(sd)
    except KeyError as exc:
        raise ModelFileError(f"incomplete T2I-Adapter: no {_missing(exc)} tensor") from exc


def _adapter_config(sd: dict[str, Tensor]) -> dict[str, Any]:
    keys = list(sd)
    blocks = _indices(keys, r"adapter\.body\.(\d+)\.")
    if "adapter.conv_in.weight" not in sd:
        raise ModelFileError("light T2I-Adapters are not supported without their config.json")
    conv_in = sd["adapter.conv_in.weight"]
    first = int(conv_in.shape[0])
    channels = [int(sd[f"adapter.body.{i}.in_conv.weight"].shape[0]) if f"adapter.body.{i}.in_conv.weight" in sd
                else None for i in blocks]
    resolved, previous = [], first
    for c in channels:
        previous = c if c is not None else previous
        resolved.append(previous)
    res_blocks = len(_indices(keys, r"adapter\.body\.0\.resnets\.(\d+)\."))
    for in_channels, factor, kind in ((3, 8, "full_adapter"), (3, 16, "full_adapter_xl"),
                                      (1, 8, "full_adapter"), (1, 16, "full_adapter_xl")):
        if conv_in.shape[1] == in_channels * factor * factor:
            return {"in_channels": in_channels, "channels": resolved, "num_res_blocks": res_blocks,
                    "downscale_factor": factor, "adapter_type": kind}
    raise ModelFileError(f"T2I-Adapter conv_in takes {conv_in.shape[1]} channels: not 3 or 1 channels unshuffled by 8 or 16")
