"""The VAE of the pixel family: no autoencoder, an exact, parameter-free rearrangement.

The pixel family's "latent" is the RGB image in [-1, 1] folded by ``pixel_unshuffle(factor)``
(Shi et al. 2016, "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
Convolutional Neural Network"; ``torch.nn.functional.pixel_unshuffle``): ``[B, 3, H, W]`` becomes
``[B, 3·factor², H/factor, W/factor]``, channel ``c·factor² + factor·i + j`` holding colour ``c`` at
sub-pixel ``(i, j)``. Decoding is ``pixel_shuffle``, its exact inverse, so encode → decode gives the
input back bit for bit.

The module speaks AutoencoderKL's interface (diffusers' ``encode``/``decode`` with ``return_dict``,
a ``latent_dist`` with ``mode()``/``sample()``, a ``config`` with ``_class_name``, ``scaling_factor``
and ``latent_channels``), so VAEEncode/VAEDecode, the model manager and the training recipes use
it as they use any VAE. It has no tiled variants: a pixel rearrangement needs no tiling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput

Tensor = torch.Tensor


class PixelUnshuffleVAE(ModelMixin, ConfigMixin):
    """``encode``: ``[B, in_channels, H, W]`` in [-1, 1] (H, W multiples of ``factor``) ->
    ``[B, in_channels·factor², H/factor, W/factor]`` (a distribution of zero variance: ``mode()``
    and ``sample()`` are both the rearranged image). ``decode``: the inverse. Any float dtype and
    device; raises ValueError naming the shape when channels or sizes do not fit."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, in_channels: int = 3, factor: int = 2, latent_channels: int = 12,
                 scaling_factor: float = 1.0) -> None:
        super().__init__()
        if latent_channels != in_channels * factor * factor:
            raise ValueError(f"latent_channels {latent_channels} must be in_channels × factor² = "
                             f"{in_channels * factor * factor}")

    def encode(self, x: Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple[DiagonalGaussianDistribution]:
        factor, channels = self.config.factor, self.config.in_channels
        if x.ndim != 4 or x.shape[1] != channels or x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(f"the pixel VAE encodes [B, {channels}, H, W] images with H and W multiples of {factor}, "
                             f"got {list(x.shape)}")
        z = F.pixel_unshuffle(x, factor)
        # Zero variance: the rearrangement is exact, there is nothing to sample.
        dist = DiagonalGaussianDistribution(torch.cat([z, torch.zeros_like(z)], dim=1), deterministic=True)
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: Tensor, return_dict: bool = True) -> DecoderOutput | tuple[Tensor]:
        if z.ndim != 4 or z.shape[1] != self.config.latent_channels:
            raise ValueError(f"the pixel VAE decodes [B, {self.config.latent_channels}, h, w] latents, "
                             f"got {list(z.shape)}")
        image = F.pixel_shuffle(z, self.config.factor)
        return DecoderOutput(sample=image) if return_dict else (image,)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x, return_dict=False)[0].mode(), return_dict=False)[0]


# Parameter-free VAEs by the ``_class_name`` their checkpoints' ``nodeloom_config`` records.
PARAMETER_FREE_VAES: dict[str, type[PixelUnshuffleVAE]] = {"PixelUnshuffleVAE": PixelUnshuffleVAE}


def parameter_free_vae(config: dict) -> PixelUnshuffleVAE | None:
    """The parameter-free VAE a checkpoint's VAE config names, or None (an AutoencoderKL's)."""
    cls = PARAMETER_FREE_VAES.get(str(config.get("_class_name", "")))
    return None if cls is None else cls.from_config({k: v for k, v in config.items() if not k.startswith("_")})
