"""ModelSamplingDiscrete sets the prediction type, LCM's grid and zero-terminal-SNR betas on the
MODEL's own schedule, leaving the shared model and other MODEL values alone."""

from __future__ import annotations

import pytest
import torch

from nodes.diffusion.nodes_latent import EmptyLatentImage
from nodes.diffusion.samplers import build_scheduler
from nodes.diffusion.nodes_model import ZSNR_LAST_ALPHA_BAR, ModelSamplingDiscrete, patch_scheduler_config
from tests.diffusion.diffusion_helpers import ksample, load

SD15_SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                 "num_train_timesteps": 1000, "prediction_type": "epsilon"}


def comfy_zsnr_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """ComfyUI's recipe, restated: shift sqrt(alpha_bar) so the last is 0, scale so the first
    is unchanged, then floor the last alpha_bar at ZSNR_LAST_ALPHA_BAR."""
    root = (1 / (sigmas * sigmas + 1)).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    alphas_bar = ((root - last) * first / (first - last)) ** 2
    alphas_bar[-1] = ZSNR_LAST_ALPHA_BAR
    return ((1 - alphas_bar) / alphas_bar).sqrt()


def sigmas_of(config: dict) -> torch.Tensor:
    scheduler = build_scheduler(config, "ddim", "normal")
    return ((1 - scheduler.alphas_cumprod) / scheduler.alphas_cumprod).sqrt().double()


def test_zsnr_matches_comfyui_rescale() -> None:
    patched = patch_scheduler_config(SD15_SCHEDULE, "eps", zsnr=True)
    ours, original = sigmas_of(patched), sigmas_of(SD15_SCHEDULE)
    expected = comfy_zsnr_sigmas(original)
    assert torch.allclose(ours, expected, rtol=1e-4)
    assert ours[-1] == pytest.approx(((1 - ZSNR_LAST_ALPHA_BAR) / ZSNR_LAST_ALPHA_BAR) ** 0.5, rel=1e-4)
    assert ours[0] == pytest.approx(float(original[0]), rel=1e-4)


@pytest.mark.parametrize(("sampling", "prediction"), [("eps", "epsilon"), ("v_prediction", "v_prediction"),
                                                      ("lcm", "epsilon"), ("x0", "sample")])
def test_prediction_type_reaches_every_sampler(sampling: str, prediction: str) -> None:
    patched = patch_scheduler_config(SD15_SCHEDULE, sampling, zsnr=False)
    for sampler in ("euler", "dpmpp_2m", "lcm"):
        assert build_scheduler(patched, sampler, "normal").config.prediction_type == prediction
    lcm = build_scheduler(patched, "lcm", "sgm_uniform")
    lcm.set_timesteps(4)
    assert lcm.timesteps.tolist() == [999, 759, 499, 259]  # LCM's 50-step grid, ComfyUI's t = 20k - 1


def test_node_patches_only_its_own_model(make_ctx) -> None:
    ctx = make_ctx()
    model, clip, _ = load(ctx, "tiny-sd15.safetensors")
    before = dict(model.scheduler_config)
    (v_model,) = ModelSamplingDiscrete().run(ctx, model=model, sampling="v_prediction", zsnr=True)
    assert model.scheduler_config == before and v_model.ref is model.ref
    assert v_model.scheduler_config["prediction_type"] == "v_prediction"
    latent = EmptyLatentImage().run(ctx, width=64, height=64, batch_size=1)[0]
    eps_out = ksample(ctx, model, clip, latent, sampler="lcm", cfg=1.0)["samples"]
    v_out = ksample(ctx, v_model, clip, latent, sampler="lcm", cfg=1.0)["samples"]
    assert torch.isfinite(v_out).all() and (v_out - eps_out).abs().max() > 1e-2


def test_second_node_replaces_the_first_as_in_comfyui(make_ctx) -> None:
    """ComfyUI builds each ModelSamplingDiscrete from the model's own config, so a second one replaces
    the first: zsnr could not be turned off again, and zsnr twice rescaled the rescaled betas."""
    ctx = make_ctx()
    model, _, _ = load(ctx, "tiny-sd15.safetensors")
    node = ModelSamplingDiscrete()
    (zsnr,) = node.run(ctx, model=model, sampling="eps", zsnr=True)
    (lcm_zsnr,) = node.run(ctx, model=model, sampling="lcm", zsnr=True)
    (plain,) = node.run(ctx, model=model, sampling="v_prediction", zsnr=False)
    assert node.run(ctx, model=zsnr, sampling="lcm", zsnr=True)[0].scheduler_config == lcm_zsnr.scheduler_config
    assert node.run(ctx, model=lcm_zsnr, sampling="v_prediction", zsnr=False)[0].scheduler_config == \
        plain.scheduler_config
