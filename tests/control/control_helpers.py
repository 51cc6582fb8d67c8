"""Graph pieces for the ControlNet tests: the node graph and the matching diffusers ControlNet pipeline."""

from __future__ import annotations

from typing import Any

import torch

from diffusion_helpers import NEGATIVE, POSITIVE, encode, load
from nodes.control.nodes_apply import ControlNetApplyAdvanced
from nodes.control.nodes_loaders import ControlNetLoader
from nodes.diffusion.nodes_latent import VAEDecode
from nodes.diffusion.nodes_sampling import KSampler
from nodes.diffusion.samplers import build_scheduler
from nodes.infra.model_manager import manager_from


def control_image(seed: int, size: int = 64) -> torch.Tensor:
    """IMAGE [1, size, size, 3]: a bright square on dark with some noise (a plausible edge map)."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, size, size, 3, generator=gen) * 0.2
    image[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] += 0.7
    return image.clamp(0, 1)


def graph_image(ctx: Any, ckpt: str, controls: list[tuple[str, torch.Tensor, float, float, float]], *,
                seed: int = 42, steps: int = 4, cfg: float = 7.0) -> torch.Tensor:
    """txt2img 64x64 through KSampler with each (controlnet file, image, strength, start, end) applied."""
    model, clip, vae = load(ctx, ckpt)
    positive, negative = encode(ctx, clip, POSITIVE), encode(ctx, clip, NEGATIVE)
    for name, image, strength, start, end in controls:
        net = ControlNetLoader().run(ctx, control_net_name=name)[0]
        positive, negative = ControlNetApplyAdvanced().run(ctx, positive=positive, negative=negative, control_net=net,
                                                           image=image, strength=strength, start_percent=start,
                                                           end_percent=end)
    latent = KSampler().run(ctx, model=model, seed=seed, steps=steps, cfg=cfg, sampler_name="euler",
                            scheduler="normal", positive=positive, negative=negative,
                            latent_image={"samples": torch.zeros(1, 4, 8, 8)}, denoise=1.0)[0]
    return VAEDecode().run(ctx, samples=latent, vae=vae)[0]


def pipeline_image(ctx: Any, ckpt: str, controls: list[tuple[str, torch.Tensor, float, float, float]], *,
                   seed: int = 42, steps: int = 4, cfg: float = 7.0) -> torch.Tensor:
    """The same through diffusers' StableDiffusion(XL)ControlNetPipeline over the very same modules."""
    import diffusers

    manager = manager_from(ctx.services)
    model, clip, vae = load(ctx, ckpt)
    nets = [manager.ensure_loaded(ControlNetLoader().run(ctx, control_net_name=c[0])[0].ref) for c in controls]
    parts: dict[str, Any] = {"vae": manager.ensure_loaded(vae.ref), "unet": manager.ensure_loaded(model.ref),
                             "scheduler": build_scheduler(model.scheduler_config, "euler", "normal"),
                             "controlnet": nets if len(nets) > 1 else nets[0]}
    encoders = [manager.ensure_loaded(r) for r in clip.refs]
    tokenizers = clip.tokenizers()
    if model.family == "sdxl":
        pipe = diffusers.StableDiffusionXLControlNetPipeline(text_encoder=encoders[0], text_encoder_2=encoders[1],
                                                             tokenizer=tokenizers[0], tokenizer_2=tokenizers[1], **parts)
    else:
        pipe = diffusers.StableDiffusionControlNetPipeline(text_encoder=encoders[0], tokenizer=tokenizers[0],
                                                           safety_checker=None, feature_extractor=None,
                                                           requires_safety_checker=False, **parts)
    pipe.set_progress_bar_config(disable=True)
    images = [c[1].permute(0, 3, 1, 2) for c in controls]
    one = len(controls) == 1
    out = pipe(POSITIVE, image=images[0] if one else images, negative_prompt=NEGATIVE, height=64, width=64,
               num_inference_steps=steps, guidance_scale=cfg, generator=torch.Generator().manual_seed(seed),
               controlnet_conditioning_scale=controls[0][2] if one else [c[2] for c in controls],
               control_guidance_start=controls[0][3] if one else [c[3] for c in controls],
               control_guidance_end=controls[0][4] if one else [c[4] for c in controls], output_type="pt").images
    return out.permute(0, 2, 3, 1).float()
