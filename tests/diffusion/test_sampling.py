"""Samplers, seeds, KSamplerAdvanced windows, previews, and the model manager's budget."""

from __future__ import annotations

import pytest
import torch

from graph_runtime import FolderPaths, HookContext

from nodes.infra.model_manager import ModelManager, manager_from
from nodes.diffusion.nodes_sampling import KSampler, KSamplerAdvanced
from nodes.diffusion.samplers import SAMPLER_NAMES, check_combination

from diffusion_helpers import encode, ksample, load, txt2img


@pytest.mark.parametrize("sampler", [s for s in SAMPLER_NAMES if check_combination(s, "normal") is None])
def test_every_sampler_runs(make_ctx, sampler: str) -> None:
    ctx = make_ctx()
    model, clip, _ = load(ctx, "tiny-sd15.safetensors")
    out = ksample(ctx, model, clip, {"samples": torch.zeros(1, 4, 8, 8)}, sampler=sampler, steps=3)
    assert torch.isfinite(out["samples"]).all()


def test_unsupported_combination_rejected_at_validation(tmp_path) -> None:
    hook_context = HookContext(FolderPaths(base=tmp_path))
    assert "does not support" in KSampler.validate_inputs(hook_context, sampler_name="ddim", scheduler="karras")
    assert KSampler.validate_inputs(hook_context, sampler_name="euler", scheduler="karras") is None
    assert "not supported" in check_combination("magic", "normal")


def test_seed_is_batch_size_independent(make_ctx) -> None:
    ctx = make_ctx()
    one = txt2img(ctx, "tiny-sd15.safetensors", seed=5, sampler="euler_ancestral")
    three = txt2img(ctx, "tiny-sd15.safetensors", seed=5, sampler="euler_ancestral", batch_size=3)
    assert torch.allclose(one[0], three[0], atol=1e-5)
    assert not torch.allclose(three[0], three[1], atol=1e-3)
    again = txt2img(ctx, "tiny-sd15.safetensors", seed=5, sampler="euler_ancestral")
    assert torch.equal(one, again)


def test_advanced_split_equals_single_run(make_ctx) -> None:
    ctx = make_ctx()
    model, clip, _ = load(ctx, "tiny-sd15.safetensors")
    pos, neg = encode(ctx, clip, "a cat"), encode(ctx, clip, "blurry")
    empty = {"samples": torch.zeros(1, 4, 8, 8)}
    common = dict(model=model, noise_seed=3, steps=6, cfg=5.0, sampler_name="euler", scheduler="normal",
                  positive=pos, negative=neg)
    full = KSamplerAdvanced().run(ctx, add_noise="enable", latent_image=empty, start_at_step=0, end_at_step=10000,
                                  return_with_leftover_noise="disable", **common)[0]
    first = KSamplerAdvanced().run(ctx, add_noise="enable", latent_image=empty, start_at_step=0, end_at_step=3,
                                   return_with_leftover_noise="enable", **common)[0]
    second = KSamplerAdvanced().run(ctx, add_noise="disable", latent_image=first, start_at_step=3,
                                    end_at_step=10000, return_with_leftover_noise="disable", **common)[0]
    assert torch.allclose(full["samples"], second["samples"], atol=1e-4)


def test_progress_reports_previews(make_ctx) -> None:
    ctx = make_ctx()
    txt2img(ctx, "tiny-sdxl.safetensors", steps=3)
    events = make_ctx.recorder.events
    assert [e[1] for e in events] == [1, 2, 3] and all(e[2] == 3 for e in events)
    assert events[-1][3].image_type == "JPEG" and events[-1][3].data[:2] == b"\xff\xd8"


def test_previews_are_rate_limited_but_progress_reports_every_step(make_ctx, monkeypatch) -> None:
    from nodes.diffusion import nodes_sampling

    monkeypatch.setattr(nodes_sampling, "PREVIEW_INTERVAL_S", 3600.0)
    ctx = make_ctx()
    txt2img(ctx, "tiny-sd15.safetensors", steps=6)
    events = make_ctx.recorder.events
    assert [e[1] for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e[1] for e in events if e[3] is not None] == [1, 6]


def test_same_file_is_loaded_once(make_ctx) -> None:
    ctx = make_ctx()
    a = load(ctx, "tiny-sd15.safetensors")
    b = load(ctx, "tiny-sd15.safetensors")
    manager = manager_from(ctx.services)
    assert manager.ensure_loaded(a[0].ref) is manager.ensure_loaded(b[0].ref)
    assert {m["part"] for m in manager.loaded()} == {"unet", "vae", "text_encoder"}


def test_budget_smaller_than_two_models_evicts_and_stays_correct(make_ctx) -> None:
    ctx = make_ctx()
    reference = {ck: txt2img(ctx, ck, steps=2) for ck in ("tiny-sd15.safetensors", "tiny-sdxl.safetensors")}
    manager = manager_from(ctx.services)
    one_model = max(sum(m["bytes"] for m in manager.loaded() if m["name"] == ck) for ck in reference)
    small = ModelManager(device="cpu", ram_budget=int(one_model * 1.2))
    ctx.services.set("model_manager", small)
    for _ in range(3):
        for ck, expected in reference.items():
            assert torch.equal(txt2img(ctx, ck, steps=2), expected)
            assert small.stats()["ram_used"] <= small.ram_budget
    assert small.evictions > 0


@pytest.mark.slow
def test_compiled_and_channels_last_unet_give_the_same_image(make_ctx) -> None:
    ctx = make_ctx()
    expected = txt2img(ctx, "tiny-sd15.safetensors", steps=2)
    ctx.services.set("model_manager", ModelManager(device="cpu", compile=True, channels_last=True))
    image = txt2img(ctx, "tiny-sd15.safetensors", steps=2)
    assert torch.allclose(image, expected, atol=2e-3)


@pytest.mark.slow
def test_no_leak_across_50_runs(make_ctx) -> None:
    import gc

    import psutil

    ctx = make_ctx()
    process = psutil.Process()
    for _ in range(5):
        txt2img(ctx, "tiny-sd15.safetensors", steps=2)
    gc.collect()
    start = process.memory_info().rss
    for i in range(50):
        txt2img(ctx, "tiny-sd15.safetensors" if i % 2 else "tiny-sdxl.safetensors", steps=2)
    gc.collect()
    assert process.memory_info().rss - start < 150 * 2**20


# -- empty latents of another family --------------------------------------------------------------

def test_an_empty_sd_latent_becomes_the_pixel_familys_and_samples(make_ctx) -> None:
    from nodes.diffusion.nodes_latent import EmptyLatentImage, VAEDecode
    from tests.training.pixel_helpers import pixel_model

    ctx = make_ctx()
    model, clip, vae = pixel_model(ctx)
    empty = EmptyLatentImage().run(ctx, width=32, height=48, batch_size=2)[0]
    assert empty["samples"].shape == (2, 4, 6, 4)  # ComfyUI's [B, 4, H/8, W/8]
    empty["noise_mask"] = torch.ones(1, 48, 32)
    out = ksample(ctx, model, clip, empty, steps=2, sampler="ddim")
    assert out["samples"].shape == (2, 12, 24, 16) and out["downscale_ratio_spacial"] == 2
    assert out["noise_mask"] is empty["noise_mask"]
    assert VAEDecode().run(ctx, samples=out, vae=vae)[0].shape == (2, 48, 32, 3)


def test_a_latent_of_another_family_with_content_is_named() -> None:
    from nodes.diffusion.families import PIXEL, SD15
    from nodes.diffusion.sampling import fit_latent

    encoded = {"samples": torch.ones(1, 4, 4, 4)}
    with pytest.raises(ValueError, match=r"latent_image: a \[1, 4, 4, 4\] latent does not fit this pixel model .*"
                                         r"\[B, 12, H/2, W/2\] \(\[1, 12, 16, 16\] for 32x32 pixels\)"):
        fit_latent(encoded, PIXEL)
    with pytest.raises(ValueError, match=r"a \[1, 12, 16, 16\] latent does not fit this sd15 model"):
        fit_latent({"samples": torch.ones(1, 12, 16, 16)}, SD15)
    same = {"samples": torch.zeros(1, 4, 8, 8), "downscale_ratio_spacial": 8}
    assert fit_latent(same, SD15) is same  # the family's own empty latent is left alone
    pixel_empty = fit_latent({"samples": torch.zeros(1, 12, 16, 16), "downscale_ratio_spacial": 2}, SD15)
    assert pixel_empty["samples"].shape == (1, 4, 4, 4)  # 32x32 pixels in SD's cells
