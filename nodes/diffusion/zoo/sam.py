"""A tiny segment-anything model, for the SAM nodes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from nodes.infra.files import METADATA_KEY, save_safetensors

TINY_SAM: dict[str, Any] = {"img_size": 64, "patch_size": 16, "encoder_embed_dim": 32, "encoder_depth": 1,
                            "encoder_num_heads": 2, "window_size": 2, "global_attn_indexes": [0],
                            "prompt_embed_dim": 16, "decoder_depth": 2, "decoder_mlp_dim": 32, "decoder_num_heads": 2}


def build_sam(config: dict[str, Any]) -> torch.nn.Module:
    """A segment-anything ``Sam`` of any size (the registry only builds the published three)."""
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    embed = config["prompt_embed_dim"]
    grid = config["img_size"] // config["patch_size"]
    encoder = ImageEncoderViT(
        depth=config["encoder_depth"], embed_dim=config["encoder_embed_dim"], img_size=config["img_size"],
        mlp_ratio=4, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=config["encoder_num_heads"],
        patch_size=config["patch_size"], qkv_bias=True, use_rel_pos=True,
        global_attn_indexes=tuple(config["global_attn_indexes"]), window_size=config["window_size"], out_chans=embed)
    prompt = PromptEncoder(embed_dim=embed, image_embedding_size=(grid, grid),
                           input_image_size=(config["img_size"], config["img_size"]), mask_in_chans=16)
    decoder = MaskDecoder(num_multimask_outputs=3, transformer_dim=embed, iou_head_depth=3, iou_head_hidden_dim=32,
                          transformer=TwoWayTransformer(depth=config["decoder_depth"], embedding_dim=embed,
                                                        mlp_dim=config["decoder_mlp_dim"],
                                                        num_heads=config["decoder_num_heads"]))
    return Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder,
               pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375]).eval()


def save_sam(root: Path, seed: int) -> Path | None:
    try:
        import segment_anything  # noqa: F401
    except ImportError:  # optional dependency: the SAM nodes say so when used
        return None
    torch.manual_seed(seed)
    sam = build_sam(TINY_SAM)
    return save_safetensors(sam.state_dict(), root / "sams" / "tiny-sam.safetensors",
                             {METADATA_KEY: json.dumps({"sam": TINY_SAM})})
