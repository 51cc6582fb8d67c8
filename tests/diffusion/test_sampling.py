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
