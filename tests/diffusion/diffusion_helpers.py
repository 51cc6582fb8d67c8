"""Graph pieces shared by the diffusion tests: run the nodes, build the matching diffusers pipeline."""

from __future__ import annotations

from typing import Any

import torch

from nodes.infra.model_manager import manager_from
from nodes.diffusion.nodes_conditioning import CLIPTextEncode
from nodes.diffusion.nodes_latent import EmptyLatentImage, VAEDecode
from nodes.diffusion.nodes_loaders import CheckpointLoaderSimple
from nodes.diffusion.nodes_sampling import KSampler
from nodes.diffusion.samplers import build_scheduler

POSITIVE = "a photo of a cat"
NEGATIVE = "blurry"


def load(ctx: Any, ckpt: str) -> tuple[Any, Any, Any]:
    return CheckpointLoaderSimple().run(ctx, ckpt_name=ckpt)


def encode(ctx: Any, clip: Any, text: str) -> Any:
    return CLIPTextEncode().run(ctx, text=text, clip=clip)[0]


def ksample(ctx: Any, model: Any, clip: Any, latent: dict, *, seed: int = 42, steps: int = 4, cfg: float = 7.0,
            sampler: str = "euler", scheduler: str = "normal", denoise: float = 1.0) -> dict:
    return KSampler().run(ctx, model=model, seed=seed, steps=steps, cfg=cfg, sampler_name=sampler,
                          scheduler=scheduler, positive=encode(ctx, clip, POSITIVE),
                          negative=encode(ctx, clip, NEGATIVE), latent_image=latent, denoise=denoise)[0]


def txt2img(ctx: Any, ckpt: str, **kwargs: Any) -> torch.Tensor:
    model, clip, vae = load(ctx, ckpt)
    latent = EmptyLatentImage().run(ctx, width=64, height=64, batch_size=kwargs.pop("batch_size", 1))[0]
    return VAEDecode().run(ctx, samples=ksample(ctx, model, clip, latent, **kwargs), vae=vae)[0]


def pipeline(ctx: Any, model: Any, clip: Any, vae: Any, kind: str, sampler: str = "euler", scheduler: str = "normal") -> Any:
    """The diffusers pipeline of ``kind`` (txt2img, img2img, inpaint) over the very same modules."""
    import diffusers

    manager = manager_from(ctx.services)
    unet = manager.ensure_loaded(model.ref)
    encoders = [manager.ensure_loaded(r) for r in clip.refs]
    decoder = manager.ensure_loaded(vae.ref)
    tokenizers = clip.tokenizers()
    sched = build_scheduler(model.scheduler_config, sampler, scheduler)
    prefix = "StableDiffusionXL" if model.family == "sdxl" else "StableDiffusion"
    suffix = {"txt2img": "Pipeline", "img2img": "Img2ImgPipeline", "inpaint": "InpaintPipeline"}[kind]
    cls = getattr(diffusers, prefix + suffix)
    if model.family == "sdxl":
        pipe = cls(vae=decoder, text_encoder=encoders[0], text_encoder_2=encoders[1], tokenizer=tokenizers[0],
                   tokenizer_2=tokenizers[1], unet=unet, scheduler=sched)
    else:
        pipe = cls(vae=decoder, text_encoder=encoders[0], tokenizer=tokenizers[0], unet=unet, scheduler=sched,
                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def to_image(pt: torch.Tensor) -> torch.Tensor:
    return pt.permute(0, 2, 3, 1).float()


def sample_image(height: int = 64, width: int = 64, seed: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    base = torch.linspace(0, 1, width).repeat(height, 1)
    image = torch.stack([base, base.T, 1 - base], dim=-1)[None]
    return (image * 0.7 + 0.3 * torch.rand(1, height, width, 3, generator=gen)).clamp(0, 1)
