"""A KSampler graph gives the diffusers pipeline's image for the same modules, seed and settings."""

from __future__ import annotations

import pytest
import torch

from nodes.diffusion.nodes_latent import SetLatentNoiseMask, VAEDecode, VAEEncode
from nodes.diffusion.nodes_loaders import LoraLoader

from diffusion_helpers import NEGATIVE, POSITIVE, ksample, load, pipeline, sample_image, to_image, txt2img

CHECKPOINTS = ["tiny-sd15.safetensors", "tiny-sdxl.safetensors"]
TOL = 1e-4


@pytest.mark.parametrize("ckpt", CHECKPOINTS)
@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "dpmpp_2m"])
def test_txt2img_matches_pipeline(make_ctx, ckpt: str, sampler: str) -> None:
    ctx = make_ctx()
    image = txt2img(ctx, ckpt, sampler=sampler)
    model, clip, vae = load(ctx, ckpt)
    pipe = pipeline(ctx, model, clip, vae, "txt2img", sampler)
    ref = pipe(POSITIVE, negative_prompt=NEGATIVE, height=64, width=64, num_inference_steps=4, guidance_scale=7.0,
               generator=torch.Generator().manual_seed(42), output_type="pt").images
    assert (image - to_image(ref)).abs().max() < TOL


@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_img2img_with_denoise_matches_pipeline(make_ctx, ckpt: str) -> None:
    ctx = make_ctx()
    model, clip, vae = load(ctx, ckpt)
    latent = VAEEncode().run(ctx, pixels=sample_image(), vae=vae)[0]
    # ComfyUI's meaning: 4 steps run at denoise 0.5 = the last 4 of an 8-step schedule,
    # which is diffusers' num_inference_steps=8, strength=0.5.
    out = ksample(ctx, model, clip, latent, steps=4, denoise=0.5)
    image = VAEDecode().run(ctx, samples=out, vae=vae)[0]
    pipe = pipeline(ctx, model, clip, vae, "img2img")
    # The pipeline samples the VAE posterior with the generator; ComfyUI encodes the mean, so
    # the pipeline gets the encoded latents directly (it accepts 4-channel latents as image).
    ref = pipe(POSITIVE, image=latent["samples"], negative_prompt=NEGATIVE, num_inference_steps=8, strength=0.5,
               guidance_scale=7.0, generator=torch.Generator().manual_seed(42), output_type="pt").images
    assert (image - to_image(ref)).abs().max() < TOL


@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_inpaint_with_mask_matches_pipeline(make_ctx, ckpt: str) -> None:
    ctx = make_ctx()
    model, clip, vae = load(ctx, ckpt)
    latent = VAEEncode().run(ctx, pixels=sample_image(), vae=vae)[0]
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 8:40] = 1.0  # aligned to 8-pixel cells: every resize of it agrees
    masked = SetLatentNoiseMask().run(ctx, samples=latent, mask=mask)[0]
    out = ksample(ctx, model, clip, masked)
    image = VAEDecode().run(ctx, samples=out, vae=vae)[0]
    pipe = pipeline(ctx, model, clip, vae, "inpaint")
    ref = pipe(POSITIVE, image=latent["samples"], mask_image=mask[:, None], masked_image_latents=latent["samples"],
               negative_prompt=NEGATIVE, height=64, width=64, num_inference_steps=4, strength=1.0,
               guidance_scale=7.0, generator=torch.Generator().manual_seed(42), output_type="pt").images
    assert (image - to_image(ref)).abs().max() < TOL
    # Outside the mask the input latent survives exactly; inside it is regenerated.
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:6, 1:5] = False
    assert torch.allclose(out["samples"][..., outside], latent["samples"][..., outside], atol=1e-6)
    assert (out["samples"][..., ~outside] - latent["samples"][..., ~outside]).abs().max() > 0.1


@pytest.mark.parametrize("lora", ["tiny-sd15-kohya.safetensors", "tiny-sd15-diffusers.safetensors"])
def test_lora_matches_load_lora_weights(make_ctx, zoo_root, lora: str) -> None:
    ctx = make_ctx()
    model, clip, vae = load(ctx, "tiny-sd15.safetensors")
    base = VAEDecode().run(ctx, samples=ksample(ctx, model, clip, {"samples": torch.zeros(1, 4, 8, 8)}), vae=vae)[0]
    lmodel, lclip = LoraLoader().run(ctx, model=model, clip=clip, lora_name=lora, strength_model=1.0,
                                     strength_clip=1.0).outputs
    image = VAEDecode().run(ctx, samples=ksample(ctx, lmodel, lclip, {"samples": torch.zeros(1, 4, 8, 8)}), vae=vae)[0]
    assert (image - base).abs().max() > 1e-3, "the LoRA changed nothing"
    pipe = pipeline(ctx, model, clip, vae, "txt2img")
    pipe.load_lora_weights(str(zoo_root / "loras" / lora), adapter_name="test")
    try:
        ref = pipe(POSITIVE, negative_prompt=NEGATIVE, height=64, width=64, num_inference_steps=4, guidance_scale=7.0,
                   generator=torch.Generator().manual_seed(42), output_type="pt").images
    finally:
        pipe.unload_lora_weights()
    assert (image - to_image(ref)).abs().max() < 1e-3
    # The shared base model is untouched: sampling without the LoRA gives the base image again.
    again = VAEDecode().run(ctx, samples=ksample(ctx, model, clip, {"samples": torch.zeros(1, 4, 8, 8)}), vae=vae)[0]
    assert torch.equal(again, base)
