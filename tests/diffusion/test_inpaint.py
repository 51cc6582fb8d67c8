"""Inpainting checkpoints (9-channel UNets) get [noisy latents, mask, masked-image latents] as
diffusers' StableDiffusionInpaintPipeline and ComfyUI give them."""

from __future__ import annotations

import pytest
import torch

from nodes.diffusion.inpaint import GREY_LATENT, inpaint_inputs
from nodes.diffusion.nodes_latent import EmptyLatentImage, InpaintModelConditioning, VAEDecode, VAEEncodeForInpaint
from nodes.diffusion.nodes_sampling import KSampler
from nodes.infra.model_manager import manager_from

from diffusion_helpers import NEGATIVE, POSITIVE, encode, ksample, load, pipeline, sample_image, to_image

CKPT = "tiny-sd15-inpainting.safetensors"
TOL = 1e-4


def _mask() -> torch.Tensor:
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 8:40] = 1.0  # aligned to 8-pixel cells: nearest and bilinear resizes agree
    return mask


def _unet_inputs(ctx, model) -> tuple[list[torch.Tensor], torch.utils.hooks.RemovableHandle]:
    """Records the input of every UNet call (remove the handle when done)."""
    unet = manager_from(ctx.services).ensure_loaded(model.ref)
    seen: list[torch.Tensor] = []
    handle = unet.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    return seen, handle


def test_inpainting_checkpoint_loads_with_nine_channels(make_ctx) -> None:
    ctx = make_ctx()
    model, _, _ = load(ctx, CKPT)
    assert manager_from(ctx.services).ensure_loaded(model.ref).config.in_channels == 9
    assert model.scheduler_config["prediction_type"] == "epsilon"


def test_inpaint_model_conditioning_matches_inpaint_pipeline(make_ctx) -> None:
    ctx = make_ctx()
    model, clip, vae = load(ctx, CKPT)
    image, mask = sample_image(), _mask()
    positive, negative, _ = InpaintModelConditioning().run(
        ctx, positive=encode(ctx, clip, POSITIVE), negative=encode(ctx, clip, NEGATIVE), vae=vae, pixels=image,
        mask=mask, noise_mask=False)
    concat = positive[0][1]["concat_latent_image"]
    # The masked-image latents are the VAE mean of the image with the mask area at 0 in [-1, 1].
    module = manager_from(ctx.services).ensure_loaded(vae.ref)
    pixels = (image.permute(0, 3, 1, 2) * 2 - 1) * (mask[:, None] < 0.5)
    with torch.no_grad():
        direct = module.encode(pixels).latent_dist.mode() * vae.scaling_factor
    assert (concat - direct).abs().max() < 1e-5

    empty = EmptyLatentImage().run(ctx, width=64, height=64, batch_size=1)[0]
    out = KSampler().run(ctx, model=model, seed=42, steps=4, cfg=7.0, sampler_name="euler", scheduler="normal",
                         positive=positive, negative=negative, latent_image=empty, denoise=1.0)[0]
    ours = VAEDecode().run(ctx, samples=out, vae=vae)[0]
    pipe = pipeline(ctx, model, clip, vae, "inpaint")
    ref = pipe(POSITIVE, image=image.permute(0, 3, 1, 2), mask_image=mask[:, None], masked_image_latents=concat,
               negative_prompt=NEGATIVE, height=64, width=64, num_inference_steps=4, strength=1.0, guidance_scale=7.0,
               generator=torch.Generator().manual_seed(42), output_type="pt").images
    assert (ours - to_image(ref)).abs().max() < TOL


def test_vae_encode_for_inpaint_feeds_mask_and_latents(make_ctx) -> None:
    """ComfyUI's older path: the LATENT's noise mask and samples are the extra channels, and the
    unmasked area keeps the input latent."""
    ctx = make_ctx()
    model, clip, vae = load(ctx, CKPT)
    latent = VAEEncodeForInpaint().run(ctx, pixels=sample_image(), vae=vae, mask=_mask(), grow_mask_by=0)[0]
    seen, handle = _unet_inputs(ctx, model)
    try:
        out = ksample(ctx, model, clip, latent)
    finally:
        handle.remove()
    assert len(seen) == 4 and all(x.shape == (2, 9, 8, 8) for x in seen)
    expected_mask = torch.zeros(8, 8)
    expected_mask[2:6, 1:5] = 1.0
    for x in seen:
        assert torch.equal(x[:, 4], expected_mask.expand(2, 8, 8))
        assert torch.allclose(x[:, 5:], latent["samples"].expand(2, -1, -1, -1), atol=1e-6)
    keep = expected_mask == 0
    assert torch.allclose(out["samples"][..., keep], latent["samples"][..., keep], atol=1e-6)


def test_txt2img_on_an_inpainting_model_uses_a_full_mask_and_grey_image(make_ctx) -> None:
    ctx = make_ctx()
    model, clip, _ = load(ctx, CKPT)
    seen, handle = _unet_inputs(ctx, model)
    try:
        ksample(ctx, model, clip, EmptyLatentImage().run(ctx, width=64, height=64, batch_size=1)[0], steps=1)
    finally:
        handle.remove()
    assert torch.equal(seen[0][:, 4], torch.ones(2, 8, 8))
    assert torch.allclose(seen[0][:, 5:, 3, 3], torch.tensor([GREY_LATENT, GREY_LATENT]))


def test_unsupported_channel_count_is_refused() -> None:
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    assert inpaint_inputs({"in_channels": 4}, latent, 4) is None
    with pytest.raises(ValueError, match="takes 8 input channels; supported are 4 .plain. and 9 .inpainting."):
        inpaint_inputs({"in_channels": 8}, latent, 4)


def test_mask_stays_aligned_when_the_image_is_cropped_to_a_multiple_of_8(make_ctx) -> None:
    """A 70x75 image is centre-cropped to 64x72: the mask is resized to the whole image and
    cropped with it (ComfyUI's VAEEncodeForInpaint and InpaintModelConditioning), so the greyed
    pixels and the mask are exactly the masked ones; resizing the mask into the crop shifts it."""
    ctx = make_ctx()
    _, clip, vae = load(ctx, CKPT)
    image = torch.rand(1, 70, 75, 3)
    mask = torch.zeros(1, 70, 75)
    mask[:, 3:35, 2:26] = 1.0  # cell-aligned after the crop's (3, 1) offset, ends away from it
    expected = mask[:, None, 3:67, 1:73]
    latent = VAEEncodeForInpaint().run(ctx, pixels=image, vae=vae, mask=mask, grow_mask_by=0)[0]
    assert torch.equal(latent["noise_mask"], expected)
    cond = encode(ctx, clip, POSITIVE)
    positive, _, out = InpaintModelConditioning().run(ctx, positive=cond, negative=cond, vae=vae, pixels=image,
                                                      mask=mask, noise_mask=True)
    assert torch.equal(positive[0][1]["concat_mask"], expected) and torch.equal(out["noise_mask"], expected)
    module = manager_from(ctx.services).ensure_loaded(vae.ref)
    pixels = (image[:, 3:67, 1:73].permute(0, 3, 1, 2) * 2 - 1) * (expected < 0.5)
    with torch.no_grad():
        direct = module.encode(pixels).latent_dist.mode() * vae.scaling_factor
    assert (positive[0][1]["concat_latent_image"] - direct).abs().max() < 1e-5


@pytest.mark.parametrize("images, masks", [(1, 2), (2, 3)])
def test_mask_batch_not_matching_the_images_is_a_clear_error(make_ctx, images: int, masks: int) -> None:
    ctx = make_ctx()
    _, clip, vae = load(ctx, CKPT)
    pixels, mask = torch.rand(images, 64, 64, 3), torch.ones(masks, 64, 64)
    reason = f"a batch of {masks} masks for a batch of {images} images"
    with pytest.raises(ValueError, match=reason):
        VAEEncodeForInpaint().run(ctx, pixels=pixels, vae=vae, mask=mask, grow_mask_by=6)
    cond = encode(ctx, clip, POSITIVE)
    with pytest.raises(ValueError, match=reason):
        InpaintModelConditioning().run(ctx, positive=cond, negative=cond, vae=vae, pixels=pixels, mask=mask)
    assert VAEEncodeForInpaint().run(ctx, pixels=pixels, vae=vae, mask=mask[:1], grow_mask_by=6)[0][
        "noise_mask"].shape == (1, 1, 64, 64)
