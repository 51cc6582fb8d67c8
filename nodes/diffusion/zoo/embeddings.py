"""Tiny textual-inversion embeddings in the file forms people download (for ``embedding:name``):

    embeddings/tiny-sd15-ti.pt            A1111's pickle: {"string_to_param": {"*": [2, 32]}, ...}
    embeddings/tiny-sd15-ti3.safetensors  {"emb_params": [3, 32]}
    embeddings/tiny-sdxl-ti.safetensors   SDXL's two-encoder form {"clip_l": [2, 32], "clip_g": [2, 32]}

The vector widths are the tiny text encoders' (``tiny_text_config``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from nodes.diffusion.zoo.sd import tiny_text_config
from nodes.infra.files import save_safetensors


def save_embeddings(root: Path, seed: int) -> list[Path]:
    gen = torch.Generator().manual_seed(seed)
    width = tiny_text_config(projection=False, act="gelu")["hidden_size"]

    def vectors(count: int) -> torch.Tensor:
        return torch.randn(count, width, generator=gen)

    folder = root / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    a1111 = folder / "tiny-sd15-ti.pt"
    # The keys A1111's trainer writes besides the vectors; they load weights-only (str, int, dict).
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors(2)}, "name": "tiny-sd15-ti",
                "step": 100, "sd_checkpoint": "0000000000", "sd_checkpoint_name": "tiny-sd15"}, a1111)
    return [a1111, save_safetensors({"emb_params": vectors(3)}, folder / "tiny-sd15-ti3.safetensors"),
            save_safetensors({"clip_l": vectors(2), "clip_g": vectors(2)}, folder / "tiny-sdxl-ti.safetensors")]
