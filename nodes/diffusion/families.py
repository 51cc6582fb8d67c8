"""Model families as data: what sets SD1.x, SD2.x and SDXL apart, in one registry.

Everything that used to test ``family == "sdxl"`` reads a field of the family's
:class:`FamilySpec` instead; a new family (with the same UNet/VAE/CLIP building blocks) is one
more entry. Architecture and scheduler defaults come from the shipped published configs
(``configs/<name>.json``); preview factors are the least-squares latent -> RGB fits ComfyUI uses.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nodes.infra import ldm_keys

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class TextEncoderSpec:
    """One text encoder of a family: its part name, where its weights sit in an original
    single file (``ldm_prefix``) and in which layout (transformers' CLIP or OpenCLIP), whether it
    keeps its projection (pooled output), its tokenizer's pad token, whether the file's last
    transformer block is left out (SD2 conditions on the penultimate layer, as diffusers builds it),
    and the key of its vectors in a two-encoder textual-inversion file (clip_l, clip_h, clip_g)."""

    part: str
    ldm_prefix: str
    layout: Literal["clip", "openclip"]
    projection: bool
    pad_token: str
    drop_last_block: bool = False
    embedding_key: str = "clip_l"


@dataclass(frozen=True)
class FamilySpec:
    """A model family. Latents are ``[B, latent_channels, H / vae_scale_factor, W / vae_scale_factor]``.

    ``size_conditioning``: the UNet takes SDXL's pooled text embeds and size/crop time ids.
    ``clip_skip_from_penultimate``: the conditioning is the penultimate CLIP layer without the final
    norm (SDXL; ``CLIPSetLastLayer(-n)`` reads ``hidden_states[-n - 1]``).
    ``head_dim_64``: attention heads are 64 channels wide (SD2/SDXL) rather than a fixed count.
    """

    name: str
    title: str
    text_encoders: tuple[TextEncoderSpec, ...]
    default_resolution: int
    pipeline: str  # the diffusers txt2img pipeline class ("" when diffusers has none)
    latent_rgb: tuple[tuple[float, float, float], ...]
    latent_rgb_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    latent_channels: int = 4
    vae_scale_factor: int = 8
    size_conditioning: bool = False
    clip_skip_from_penultimate: bool = False
    head_dim_64: bool = False
    aliases: tuple[str, ...] = ()

    def shipped_config(self) -> dict[str, Any]:
        """The published component configs (unet, vae, text encoders, tokenizers, scheduler); a copy."""
        return json.loads(json.dumps(_shipped(self.name)))

    @property
    def scheduler_defaults(self) -> dict[str, Any]:
        """The family's scheduler config (betas, spacing, steps offset) as published."""
        return dict(_shipped(self.name)["scheduler"])

    @property
    def prediction_type(self) -> str:
        return str(_shipped(self.name)["scheduler"].get("prediction_type", "epsilon"))

    def latent_shape(self, batch: int, height: int, width: int) -> tuple[int, int, int, int]:
        """The latent of a ``height`` x ``width`` pixel image (sizes floored to the scale factor)."""
        return (batch, self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)


@functools.cache
def _shipped(name: str) -> dict[str, Any]:
    return json.loads((CONFIG_DIR / f"{name}.json").read_text())


_SD_RGB = ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721), (-0.2120, -0.2616, -0.7177))

SD15 = FamilySpec(
    name="sd15", title="Stable Diffusion 1.x", default_resolution=512, pipeline="StableDiffusionPipeline",
    text_encoders=(TextEncoderSpec("text_encoder", ldm_keys.SD1_CLIP_PREFIX, "clip", False, "<|endoftext|>"),),
    latent_rgb=_SD_RGB, aliases=("sd1", "sd1.5"))
SD21 = FamilySpec(
    name="sd21", title="Stable Diffusion 2.x", default_resolution=768, pipeline="StableDiffusionPipeline",
    text_encoders=(TextEncoderSpec("text_encoder", ldm_keys.SD2_OPENCLIP_PREFIX, "openclip", False, "!",
                                   drop_last_block=True, embedding_key="clip_h"),),
    latent_rgb=_SD_RGB, head_dim_64=True, aliases=("sd2", "sd2.1"))
SDXL = FamilySpec(
    name="sdxl", title="Stable Diffusion XL", default_resolution=1024, pipeline="StableDiffusionXLPipeline",
    text_encoders=(TextEncoderSpec("text_encoder", ldm_keys.SDXL_CLIP_L_PREFIX, "clip", False, "<|endoftext|>"),
                   TextEncoderSpec("text_encoder_2", ldm_keys.SDXL_OPENCLIP_PREFIX, "openclip", True, "!",
                                   embedding_key="clip_g")),
    latent_rgb=((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
                (-0.3165, -0.2492, -0.2188)),
    latent_rgb_bias=(0.1084, -0.0175, -0.0011), size_conditioning=True, clip_skip_from_penultimate=True,
    head_dim_64=True)

# Pixel space (the demo model): no autoencoder, the "latent" is the RGB image in [-1, 1] rearranged by
# pixel_unshuffle(2) (channel c*4 + 2*i + j holds colour c at sub-pixel (i, j)), so the preview
# factors average each colour's four sub-pixels. Its files carry their family in metadata: the
# text encoder's keys are SD1's, so key detection never answers it (STANDARD_FAMILIES).
PIXEL = FamilySpec(
    name="pixel", title="Pixel space (demo)", default_resolution=32, pipeline="",
    text_encoders=(TextEncoderSpec("text_encoder", ldm_keys.SD1_CLIP_PREFIX, "clip", False, "<|endoftext|>"),),
    latent_rgb=tuple(tuple(0.25 if c == row // 4 else 0.0 for c in range(3)) for row in range(12)),
    latent_channels=12, vae_scale_factor=2)

FAMILIES: dict[str, FamilySpec] = {spec.name: spec for spec in (SD15, SD21, SDXL, PIXEL)}
# The families a file without our metadata (a single file's keys, a diffusers folder) can be.
STANDARD_FAMILIES: tuple[FamilySpec, ...] = (SD15, SD21, SDXL)
# Nodes without a model input (EmptyLatentImage, LatentUpscale) size latents for this family, as
# ComfyUI does: every supported family shares its 4 channels and factor 8.
DEFAULT_FAMILY = SD15


def family(name: str) -> FamilySpec:
    """The spec of ``name`` or one of its aliases ("sd2" -> sd21). Raises ValueError naming the
    known families."""
    spec = FAMILIES.get(name) or next((f for f in FAMILIES.values() if name in f.aliases), None)
    if spec is None:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}")
    return spec


def family_of_keys(keys: set[str]) -> FamilySpec | None:
    """The family whose text encoders' prefixes all occur in a single file's keys (the one with
    the most encoders when several match: SDXL's CLIP-L prefix is not SD1's)."""
    for spec in sorted(STANDARD_FAMILIES, key=lambda f: -len(f.text_encoders)):
        if all(any(k.startswith(te.ldm_prefix) for k in keys) for te in spec.text_encoders):
            return spec
    return None
