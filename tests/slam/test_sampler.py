"""SLAMSampler gives diffusers' LCM image (LCMScheduler, trailing) for the same LoRA or distilled
UNet, seed and settings; cfg 1 costs one UNet pass per step; img2img and masks behave."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nodes.diffusion import sampling
from nodes.diffusion.denoiser import DenoiserHooks, UNetCall
from nodes.diffusion.nodes_latent import EmptyLatentImage, SetLatentNoiseMask, VAEDecode, VAEEncode
from nodes.diffusion.nodes_loaders import DiffusersLoader, LoraLoader
from nodes.infra.model_manager import manager_from
from nodes.slam.sampler import SLAMSampler
from tests.diffusion.diffusion_helpers import NEGATIVE, POSITIVE, encode, load, pipeline, sample_image, to_image

TOL = 1e-4
LORAS = {"tiny-sd15.safetensors": "tiny-lcm-lora-sd15.safetensors",
         "tiny-sdxl.safetensors": "tiny-slam-lora-sdxl.safetensors"}


def with_lora(ctx: Any, ckpt: str) -> tuple[Any, Any, Any]:
    model, clip, vae = load(ctx, ckpt)
    model, clip = LoraLoader().run(ctx, model=model, clip=clip, lora_name=LORAS[ckpt], strength_model=1.0,
                                   strength_clip=1.0).outputs
    return model, clip, vae


def slam(ctx: Any, model: Any, clip: Any, latent: dict, **kwargs: Any) -> dict:
    settings = {"seed": 42, "steps": 4, "cfg": 1.0, "denoise": 1.0, **kwargs}
    return SLAMSampler().run(ctx, model=model, positive=encode(ctx, clip, POSITIVE),
                             negative=encode(ctx, clip, NEGATIVE), latent_image=latent, **settings)[0]


def empty(ctx: Any) -> dict:
    return EmptyLatentImage().run(ctx, width=64, height=64, batch_size=1)[0]


def lcm_pipeline(ctx: Any, ckpt: str, kind: str = "txt2img") -> Any:
    model, clip, vae = load(ctx, ckpt)
    pipe = pipeline(ctx, model, clip, vae, kind, "lcm", "sgm_uniform")
    pipe.load_lora_weights(str(ctx.folders.model_path("loras", LORAS[ckpt])), adapter_name="slam")
    return pipe


@pytest.mark.parametrize(("ckpt", "cfg"), [
    ("tiny-sd15.safetensors", 1.0),
    pytest.param("tiny-sd15.safetensors", 3.0, marks=pytest.mark.slow),
    pytest.param("tiny-sdxl.safetensors", 1.0, marks=pytest.mark.slow),
    pytest.param("tiny-sdxl.safetensors", 3.0, marks=pytest.mark.slow)])
def test_txt2img_with_lora_matches_lcm_pipeline(make_ctx, ckpt: str, cfg: float) -> None:
    ctx = make_ctx()
    model, clip, vae = with_lora(ctx, ckpt)
    image = VAEDecode().run(ctx, samples=slam(ctx, model, clip, empty(ctx), cfg=cfg), vae=vae)[0]
    pipe = lcm_pipeline(ctx, ckpt)
    try:
        ref = pipe(POSITIVE, negative_prompt=NEGATIVE, height=64, width=64, num_inference_steps=4,
                   guidance_scale=cfg, generator=torch.Generator().manual_seed(42), output_type="pt").images
        assert pipe.scheduler.timesteps.tolist() == [999, 759, 499, 259]
    finally:
        pipe.unload_lora_weights()
    assert (image - to_image(ref)).abs().max() < TOL
    base_model, base_clip, _ = load(ctx, ckpt)
    base = VAEDecode().run(ctx, samples=slam(ctx, base_model, base_clip, empty(ctx), cfg=cfg), vae=vae)[0]
    assert (image - base).abs().max() > 1e-2, "the LoRA changed nothing"


def test_img2img_denoise_matches_lcm_pipeline(make_ctx) -> None:
    ctx = make_ctx()
    ckpt = "tiny-sd15.safetensors"
    model, clip, vae = with_lora(ctx, ckpt)
    latent = VAEEncode().run(ctx, pixels=sample_image(), vae=vae)[0]
    # ComfyUI's meaning: 4 steps at denoise 0.5 = the last 4 of an 8-step LCM schedule.
    image = VAEDecode().run(ctx, samples=slam(ctx, model, clip, latent, denoise=0.5), vae=vae)[0]
    pipe = lcm_pipeline(ctx, ckpt, "img2img")
    try:
        ref = pipe(POSITIVE, image=latent["samples"], num_inference_steps=8, strength=0.5, guidance_scale=1.0,
                   generator=torch.Generator().manual_seed(42), output_type="pt").images
    finally:
        pipe.unload_lora_weights()
    assert (image - to_image(ref)).abs().max() < TOL


def test_distilled_unet_takes_guidance_as_timestep_cond(make_ctx) -> None:
    ctx = make_ctx()
    model, clip, vae = DiffusersLoader().run(ctx, model_path="tiny-lcm-sd15")
    unet = manager_from(ctx.services).ensure_loaded(model.ref)
    calls: list[dict[str, Any]] = []
    handle = unet.register_forward_pre_hook(lambda m, args, kwargs: calls.append(kwargs), with_kwargs=True)
    try:
        image = VAEDecode().run(ctx, samples=slam(ctx, model, clip, empty(ctx), cfg=6.0), vae=vae)[0]
    finally:
        handle.remove()
    # Guidance is embedded, not run as CFG: still one single-batch pass per step.
    assert len(calls) == 4 and all(c["encoder_hidden_states"].shape[0] == 1 for c in calls)
    assert calls[0]["timestep_cond"].shape == (1, 32)
    pipe = pipeline(ctx, model, clip, vae, "txt2img", "lcm", "sgm_uniform")
    ref = pipe(POSITIVE, height=64, width=64, num_inference_steps=4, guidance_scale=6.0,
               generator=torch.Generator().manual_seed(42), output_type="pt").images
    assert (image - to_image(ref)).abs().max() < TOL
    unguided = VAEDecode().run(ctx, samples=slam(ctx, model, clip, empty(ctx), cfg=1.0), vae=vae)[0]
    assert (image - unguided).abs().max() > 1e-3, "the guidance embedding changed nothing"


@pytest.mark.parametrize(("cfg", "rows"), [(1.0, 1), (2.5, 2)])
def test_cfg_1_is_one_unet_pass_per_step_and_hooks_see_every_call(make_ctx, monkeypatch, cfg: float, rows: int) -> None:
    ctx = make_ctx()
    model, clip, _ = with_lora(ctx, "tiny-sd15.safetensors")
    seen: list[UNetCall] = []

    class Spy:  # a denoiser hook, as ControlNet plugs in
        name = "spy"

        def __call__(self, call: UNetCall) -> None:
            seen.append(call)

    hooks = DenoiserHooks()
    hooks.register(Spy(), source="test")
    monkeypatch.setattr(sampling, "DENOISER_HOOKS", hooks)
    unet = manager_from(ctx.services).ensure_loaded(model.ref)
    batches: list[int] = []
    handle = unet.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    try:
        slam(ctx, model, clip, empty(ctx), cfg=cfg)
    finally:
        handle.remove()
    assert batches == [rows] * 4
    assert [c.step for c in seen] == [0, 1, 2, 3] and all(c.sample.shape[0] == rows for c in seen)


def test_mask_regenerates_only_inside(make_ctx) -> None:
    ctx = make_ctx()
    model, clip, vae = with_lora(ctx, "tiny-sd15.safetensors")
    latent = VAEEncode().run(ctx, pixels=sample_image(), vae=vae)[0]
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 8:40] = 1.0  # latent cells [2:6, 1:5]
    out = slam(ctx, model, clip, latent, mask=mask)
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:6, 1:5] = False
    assert torch.equal(out["samples"][..., outside], latent["samples"][..., outside])
    assert (out["samples"][..., ~outside] - latent["samples"][..., ~outside]).abs().max() > 0.1
    # The MASK input is ComfyUI's SetLatentNoiseMask: both give the same latent.
    masked = SetLatentNoiseMask().run(ctx, samples=latent, mask=mask)[0]
    assert torch.equal(slam(ctx, model, clip, masked)["samples"], out["samples"])


def test_bad_mask_and_too_long_schedule_are_clear_errors(make_ctx) -> None:
    ctx = make_ctx()
    model, clip, _ = load(ctx, "tiny-sd15.safetensors")
    with pytest.raises(ValueError, match="mask holds 3 masks but latent_image only 1"):
        slam(ctx, model, clip, empty(ctx), mask=torch.ones(3, 64, 64))
    with pytest.raises(ValueError, match=r"mask must be \[H,W\] or \[B,H,W\]"):
        slam(ctx, model, clip, empty(ctx), mask=torch.ones(64))
    problem = SLAMSampler.validate_inputs(None, steps=30, denoise=0.5)  # type: ignore[arg-type]
    assert problem is not None and "60-step schedule" in problem and "50" in problem
    assert SLAMSampler.validate_inputs(None, steps=4, denoise=0.5) is None  # type: ignore[arg-type]


def test_bad_noise_masks_are_clear_errors_not_crashes_or_nan(make_ctx) -> None:
    """The latent's own noise_mask is checked as the MASK input is (it crashed the sampling loop with
    a tensor-size error); empty masks crashed with ZeroDivisionError, a NaN mask gave a NaN latent."""
    ctx = make_ctx()
    model, clip, _ = load(ctx, "tiny-sd15.safetensors")
    masked = SetLatentNoiseMask().run(ctx, samples=empty(ctx), mask=torch.ones(3, 64, 64))[0]
    with pytest.raises(ValueError, match="latent_image's noise_mask holds 3 masks but latent_image only 1"):
        slam(ctx, model, clip, masked)
    with pytest.raises(ValueError, match=r"mask is empty \(shape \[0, 64, 64\]\)"):
        slam(ctx, model, clip, empty(ctx), mask=torch.ones(0, 64, 64))
    with pytest.raises(ValueError, match="mask holds NaN or infinite values"):
        slam(ctx, model, clip, empty(ctx), mask=torch.full((64, 64), float("nan")))
    assert torch.isfinite(slam(ctx, model, clip, empty(ctx), mask=torch.ones(64, 64, dtype=torch.bool))["samples"]).all()
