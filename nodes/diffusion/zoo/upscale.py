"""A tiny ESRGAN x4, for the upscale-model nodes."""

from __future__ import annotations

from pathlib import Path

import torch

from nodes.infra.files import save_safetensors


def save_esrgan(root: Path, seed: int) -> Path:
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)
    return save_safetensors(net.state_dict(), root / "upscale_models" / "tiny-esrgan-x4.safetensors")
