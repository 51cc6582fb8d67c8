"""A tiny CLIP scorer folder and CLIP vision model, for the scoring and image-prompt nodes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from nodes.diffusion.zoo.sd import tiny_text_config
from nodes.infra.files import METADATA_KEY, save_safetensors
from nodes.infra.tokenizer import TINY_TOKENIZER


def _tiny_clip_model(seed: int) -> Any:
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    text = tiny_text_config(projection=False, act="quick_gelu")
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
              "image_size": 32, "patch_size": 8, "hidden_act": "quick_gelu", "projection_dim": 16}
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))


def save_clip_scorer(root: Path, seed: int) -> Path:
    """A CLIPModel folder (PickScore-shaped: from_pretrained + a processor), for scorer nodes."""
    from transformers import CLIPImageProcessor, CLIPProcessor

    from nodes.infra.tokenizer import load_tokenizer

    folder = root / "scorers" / "tiny-clip-scorer"
    model = _tiny_clip_model(seed)
    model.save_pretrained(folder, safe_serialization=True)
    tok_dir = root / "clip_tokenizer" / TINY_TOKENIZER
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                  crop_size={"height": 32, "width": 32}),
                              tokenizer=load_tokenizer(str(tok_dir)))
    processor.save_pretrained(folder)
    return folder


def save_clip_vision(root: Path, seed: int) -> Path:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                              image_size=32, patch_size=8, projection_dim=16)
    model = CLIPVisionModelWithProjection(config)
    return save_safetensors(model.state_dict(), root / "clip_vision" / "tiny-clip-vision.safetensors",
                             {METADATA_KEY: json.dumps({"clip_vision": config.to_dict()})})
