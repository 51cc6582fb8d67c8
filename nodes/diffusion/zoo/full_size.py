"""Full-size random-weight single-file checkpoints, written tensor by tensor.

For load tests and benchmarks at the published sizes (SDXL base: 2.6 B UNet parameters, 6.9 GB
in fp16) without any download: the modules are built from the shipped configs on the meta device
(shapes only), their keys renamed to the original LDM/SGM layout real files use (``ldm_keys``),
and each tensor is drawn and written on its own in the safetensors format, so writing costs about
one tensor of memory rather than the whole model. The file carries no ``nodeloom_config``
metadata: it loads exactly as a real downloaded file does (family from the keys, architecture
from the shipped configs and the tensor shapes).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from nodes.diffusion.families import family
from nodes.infra import ldm_keys

_DTYPE_NAMES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.int64: "I64"}


def full_size_layout(family_name: str) -> dict[str, torch.Tensor]:
    """Every key of a real single file of ``family_name`` (sd15, sd21, sdxl) with a meta tensor
    of its shape, in the original key layout."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from nodes.diffusion.zoo.sd import text_model_name

    fam = family(family_name)
    spec = fam.shipped_config()
    configs = {part: {k: v for k, v in spec[part].items() if not k.startswith("_")} for part in ("unet", "vae")}
    with init_empty_weights(include_buffers=True):
        unet = UNet2DConditionModel.from_config(configs["unet"])
        vae = AutoencoderKL.from_config(configs["vae"])
        encoders = []
        for te in fam.text_encoders:
            config = dict(spec[te.part])
            if te.drop_last_block:  # the file holds the block diffusers leaves out
                config["num_hidden_layers"] += 1
            cls = CLIPTextModelWithProjection if te.projection else CLIPTextModel
            encoders.append((te, cls(CLIPTextConfig(**config))))
    layout = ldm_keys.prefixed(ldm_keys.unet_to_ldm(unet.state_dict(), dict(unet.config)), ldm_keys.UNET_PREFIX)
    layout.update(ldm_keys.prefixed(ldm_keys.vae_to_ldm(vae.state_dict(), dict(vae.config)), ldm_keys.VAE_PREFIX))
    for te, encoder in encoders:
        state = {text_model_name(k): v for k, v in encoder.state_dict().items()}
        if te.layout == "openclip":
            renamed = ldm_keys.openclip_from_hf(state)
            renamed["logit_scale"] = torch.empty((), device="meta")
        else:
            renamed = {k: v for k, v in state.items() if not k.endswith("position_ids")}
            renamed["text_model.embeddings.position_ids"] = torch.empty(1, 77, dtype=torch.int64, device="meta")
        layout.update(ldm_keys.prefixed(renamed, te.ldm_prefix))
    return layout


def _random(key: str, shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """Weights of a plausible scale: norms 1, biases 0, the rest N(0, 0.02); position ids as real."""
    if dtype == torch.int64:
        return torch.arange(math.prod(shape), dtype=torch.int64).reshape(shape)
    if key.endswith("bias"):
        return torch.zeros(shape, dtype=dtype)
    if "norm" in key or ".ln_" in key or key.endswith(("ln_final.weight", "logit_scale")):
        return torch.ones(shape, dtype=dtype)
    return (torch.randn(shape, generator=generator) * 0.02).to(dtype)


def write_full_size_checkpoint(path: Path, family_name: str, *, seed: int = 0,
                               dtype: torch.dtype = torch.float16) -> Path:
    """Write a random-weight single file of ``family_name`` at its published size to ``path``
    (floating tensors in ``dtype``), streaming: peak memory is about one tensor."""
    layout = full_size_layout(family_name)
    header: dict[str, Any] = {}
    offset = 0
    for key, meta in layout.items():
        tensor_dtype = meta.dtype if not meta.is_floating_point() else dtype
        nbytes = meta.numel() * tensor_dtype.itemsize
        header[key] = {"dtype": _DTYPE_NAMES[tensor_dtype], "shape": list(meta.shape),
                       "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format aligns the data to 8 bytes
    generator = torch.Generator().manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as handle:
            handle.write(len(raw).to_bytes(8, "little") + raw)
            for key, meta in layout.items():
                tensor_dtype = meta.dtype if not meta.is_floating_point() else dtype
                tensor = _random(key, tuple(meta.shape), tensor_dtype, generator)
                handle.write(memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy()))
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path
