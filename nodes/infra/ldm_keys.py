"""The original (LDM/SGM) single-file key layout <-> diffusers/transformers layouts.

Loading renames a single file's keys to diffusers' layout (``unet_from_ldm``, ``vae_from_ldm``,
``clip_from_ldm``, ``hf_from_openclip``); the tiny zoo writes checkpoints in the layout real
``.safetensors`` files have with the inverse (``unet_to_ldm``, ``vae_to_ldm``,
``openclip_from_hf``). Both directions come from one table of block prefixes per config, generic
over the number of levels and ``layers_per_block`` (the published scripts hard-code SD's four
levels). Loading with our own table keeps diffusers' single-file machinery (seconds of imports)
out of the process; the tests check it equal to diffusers' ``single_file_utils`` converters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

Tensor = torch.Tensor

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SD2_OPENCLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."

_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
           ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]


def _unet_prefixes(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(diffusers prefix, LDM prefix) of every UNet2DConditionModel block, for ``config``."""
    levels = len(config["block_out_channels"])
    per = config["layers_per_block"]
    prefixes: list[tuple[str, str]] = [
        ("time_embedding.linear_1.", "time_embed.0."), ("time_embedding.linear_2.", "time_embed.2."),
        ("add_embedding.linear_1.", "label_emb.0.0."), ("add_embedding.linear_2.", "label_emb.0.2."),
        ("conv_in.", "input_blocks.0.0."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2."),
        ("mid_block.attentions.0.", "middle_block.1."),
    ]
    for j in range(2):
        prefixes.append((f"mid_block.resnets.{j}.", f"middle_block.{2 * j}."))
    for i in range(levels):
        down_has_attention = config["down_block_types"][i].startswith("CrossAttn")
        for j in range(per):
            prefixes.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{(per + 1) * i + j + 1}.0."))
            if down_has_attention:
                prefixes.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{(per + 1) * i + j + 1}.1."))
        prefixes.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(per + 1) * (i + 1)}.0.op."))
        up_has_attention = config["up_block_types"][i].startswith("CrossAttn")
        for j in range(per + 1):
            prefixes.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{(per + 1) * i + j}.0."))
            if up_has_attention:
                prefixes.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{(per + 1) * i + j}.1."))
        # The upsampler sits after the last resnet (and its attention, when the level has one).
        slot = 2 if up_has_attention else 1
        prefixes.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{(per + 1) * i + per}.{slot}."))
    return prefixes


def unet_to_ldm(sd: dict[str, Tensor], config: dict[str, Any]) -> dict[str, Tensor]:
    """Rename a diffusers UNet2DConditionModel state dict to the LDM layout (no prefix)."""
    prefixes = _unet_prefixes(config)
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        new = _rename(key, prefixes)
        if ".resnets." in key:
            for diffusers_name, ldm_name in _RESNET:
                new = new.replace(f".{diffusers_name}.", f".{ldm_name}.")
        out[new] = value
    return out


def unet_from_ldm(sd: Mapping[str, Tensor], config: dict[str, Any]) -> dict[str, Tensor]:
    """A diffusers UNet2DConditionModel state dict from a single file's tensors (keys under
    ``model.diffusion_model.``; other keys are ignored), for the diffusers ``config`` the UNet is
    built with. Tensors are shared, not copied. Equal to diffusers'
    ``single_file_utils.convert_ldm_unet_checkpoint`` for SD1.x/SD2.x/SDXL UNets."""
    swapped = _by_first_segments([(ldm, diffusers) for diffusers, ldm in _unet_prefixes(config)])
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if not key.startswith(UNET_PREFIX):
            continue
        new = _rename_indexed(key[len(UNET_PREFIX):], swapped)
        if ".resnets." in new:
            for diffusers_name, ldm_name in _RESNET:
                new = new.replace(f".{ldm_name}.", f".{diffusers_name}.")
        out[new] = value
    return out


def _vae_prefixes(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(diffusers prefix, LDM prefix) of every AutoencoderKL block, for ``config``."""
    levels = len(config["block_out_channels"])
    per = config["layers_per_block"]
    prefixes: list[tuple[str, str]] = [("encoder.conv_norm_out.", "encoder.norm_out."),
                                       ("decoder.conv_norm_out.", "decoder.norm_out.")]
    for i in range(levels):
        for j in range(per):
            prefixes.append((f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}."))
        prefixes.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."))
        for j in range(per + 1):
            prefixes.append((f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{levels - 1 - i}.block.{j}."))
        prefixes.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{levels - 1 - i}.upsample."))
    for part in ("encoder", "decoder"):
        for j in range(2):
            prefixes.append((f"{part}.mid_block.resnets.{j}.", f"{part}.mid.block_{j + 1}."))
        prefixes.append((f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1."))
    return prefixes


_VAE_ATTENTION = [("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."),
                  ("to_out.0.", "proj_out.")]


def vae_to_ldm(sd: dict[str, Tensor], config: dict[str, Any]) -> dict[str, Tensor]:
    """Rename a diffusers AutoencoderKL state dict to the LDM layout (no prefix)."""
    prefixes = _vae_prefixes(config)
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        new = _rename(key, prefixes)
        if ".mid.attn_1." in new:
            for a, b in _VAE_ATTENTION:
                new = new.replace(f".attn_1.{a}", f".attn_1.{b}")
            if new.endswith(".weight") and value.ndim == 2:
                value = value[:, :, None, None]  # LDM's attention uses 1x1 convolutions
        elif ".block." in new or ".block_" in new:
            new = new.replace(".conv_shortcut.", ".nin_shortcut.")
        out[new] = value
    return out


def vae_from_ldm(sd: Mapping[str, Tensor], config: dict[str, Any]) -> dict[str, Tensor]:
    """A diffusers AutoencoderKL state dict from LDM-layout VAE tensors without prefix
    (``encoder.*``, ``decoder.*``, ``quant_conv.*``, ``post_quant_conv.*``; other keys are
    ignored). The mid-block attention's 1x1 convolutions become linear weights ([C, C, 1, 1] ->
    [C, C], a view). Equal to diffusers' ``single_file_utils.convert_ldm_vae_checkpoint``."""
    swapped = _by_first_segments([(ldm, diffusers) for diffusers, ldm in _vae_prefixes(config)])
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if not key.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")):
            continue
        new = _rename_indexed(key, swapped)
        if ".mid_block.attentions.0." in new:
            for a, b in _VAE_ATTENTION:
                new = new.replace(f".attentions.0.{b}", f".attentions.0.{a}")
            if value.ndim == 4:
                value = value[:, :, 0, 0]
        elif ".resnets." in new:
            new = new.replace(".nin_shortcut.", ".conv_shortcut.")
        out[new] = value
    return out


def clip_from_ldm(sd: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """transformers' CLIPTextModel state dict from the OpenAI CLIP text encoder a single file
    holds under ``prefix`` (SD1.x's ``cond_stage_model.transformer.``, SDXL's
    ``conditioner.embedders.0.transformer.``): the same names, without the prefix."""
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key.startswith(prefix):
            name = key[len(prefix):]
            out[name if name.startswith(("text_model.", "text_projection")) else "text_model." + name] = value
    return out


def openclip_from_hf(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a transformers CLIPTextModel(WithProjection) state dict to OpenCLIP's layout."""
    out: dict[str, Tensor] = {}
    layers: dict[int, dict[str, Tensor]] = {}
    for key, value in sd.items():
        if key == "text_model.embeddings.token_embedding.weight":
            out["token_embedding.weight"] = value
        elif key == "text_model.embeddings.position_embedding.weight":
            out["positional_embedding"] = value
        elif key.startswith("text_model.final_layer_norm."):
            out["ln_final." + key.rsplit(".", 1)[1]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()  # OpenCLIP multiplies x @ P
        elif key.startswith("text_model.encoder.layers."):
            index = int(key.split(".")[3])
            layers.setdefault(index, {})[".".join(key.split(".")[4:])] = value
    for index, params in layers.items():
        p = f"transformer.resblocks.{index}."
        for kind in ("weight", "bias"):
            out[p + f"attn.in_proj_{kind}"] = torch.cat(
                [params[f"self_attn.{n}_proj.{kind}"] for n in ("q", "k", "v")], dim=0)
            out[p + f"attn.out_proj.{kind}"] = params[f"self_attn.out_proj.{kind}"]
            out[p + f"ln_1.{kind}"] = params[f"layer_norm1.{kind}"]
            out[p + f"ln_2.{kind}"] = params[f"layer_norm2.{kind}"]
            out[p + f"mlp.c_fc.{kind}"] = params[f"mlp.fc1.{kind}"]
            out[p + f"mlp.c_proj.{kind}"] = params[f"mlp.fc2.{kind}"]
    return out


def hf_from_openclip(sd: dict[str, Tensor], *, layers: int | None = None) -> dict[str, Tensor]:
    """Rename an OpenCLIP text tower (prefix removed) to transformers' CLIPTextModel layout, the
    inverse of :func:`openclip_from_hf`; only the first ``layers`` blocks are kept when given
    (SD2 conditions on the penultimate layer, so its last block is never run). Keys OpenCLIP
    keeps besides the tower (``logit_scale``, ``attn_mask``) are left out."""
    out: dict[str, Tensor] = {}
    names = {"token_embedding.weight": "text_model.embeddings.token_embedding.weight",
             "positional_embedding": "text_model.embeddings.position_embedding.weight",
             "ln_final.weight": "text_model.final_layer_norm.weight", "ln_final.bias": "text_model.final_layer_norm.bias"}
    blocks = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
              "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for key, value in sd.items():
        if key in names:
            out[names[key]] = value
        elif key == "text_projection":
            out["text_projection.weight"] = value.T.contiguous()
        elif key.startswith("transformer.resblocks."):
            index, rest = key.split(".")[2], ".".join(key.split(".")[3:])
            if layers is not None and int(index) >= layers:
                continue
            module, kind = rest.rsplit(".", 1)
            p = f"text_model.encoder.layers.{index}."
            if module == "attn" and kind.startswith("in_proj_"):
                for name, part in zip(("q", "k", "v"), value.chunk(3, dim=0)):
                    out[p + f"self_attn.{name}_proj.{kind[len('in_proj_'):]}"] = part.contiguous()
            elif module in blocks:
                out[p + f"{blocks[module]}.{kind}"] = value
    return out


def prefixed(sd: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {prefix + k: v for k, v in sd.items()}


def _by_first_segments(prefixes: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """The prefix pairs indexed by the first two dotted segments of the old prefix, so a key
    is compared with a handful of candidates instead of all of them."""
    index: dict[str, list[tuple[str, str]]] = {}
    for old, new in prefixes:
        index.setdefault(".".join(old.split(".")[:2]), []).append((old, new))
    return index


def _rename_indexed(key: str, index: dict[str, list[tuple[str, str]]]) -> str:
    return _rename(key, index.get(".".join(key.split(".")[:2]), []))


def _rename(key: str, prefixes: list[tuple[str, str]]) -> str:
    for old, new in prefixes:
        if key.startswith(old):
            return new + key[len(old):]
    return key
