"""The sampler registry's names as other ComfyUI installs write them."""

from __future__ import annotations

import torch

from graph_runtime import FolderPaths, HookContext
from graph_runtime.schema import node_schema

from nodes.diffusion.nodes_sampling import KSampler
from nodes.diffusion.samplers import GPU_TWINS, SAMPLER_NAMES, build_scheduler

from diffusion_helpers import load, ksample

TINY_CONFIG = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def test_gpu_twins_are_listed_after_their_sampler_as_comfyui_lists_them(tmp_path) -> None:
    for twin, base in GPU_TWINS.items():
        assert SAMPLER_NAMES.index(twin) == SAMPLER_NAMES.index(base) + 1
    schema = node_schema(KSampler, HookContext(FolderPaths(base=tmp_path)))
    listed = schema["input"]["required"]["sampler_name"][0]
    assert {"dpmpp_2m_sde_gpu", "dpmpp_sde_gpu", "dpmpp_3m_sde_gpu"} <= set(listed)


def test_gpu_twin_validates_and_builds_the_same_scheduler(tmp_path) -> None:
    hook_context = HookContext(FolderPaths(base=tmp_path))
    for twin, base in GPU_TWINS.items():
        assert KSampler.validate_inputs(hook_context, sampler_name=twin, scheduler="karras") == \
            KSampler.validate_inputs(hook_context, sampler_name=base, scheduler="karras")
        if base == "dpmpp_sde":
            continue  # needs torchsde; its config is compared below only when it is installed
        assert dict(build_scheduler(TINY_CONFIG, twin, "karras", seed=3).config) == \
            dict(build_scheduler(TINY_CONFIG, base, "karras", seed=3).config)


def test_gpu_twin_samples_exactly_as_its_sampler(make_ctx) -> None:
    ctx = make_ctx()
    model, clip, _ = load(ctx, "tiny-sd15.safetensors")
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    twin = ksample(ctx, model, clip, latent, sampler="dpmpp_2m_sde_gpu", steps=3)["samples"]
    base = ksample(ctx, model, clip, latent, sampler="dpmpp_2m_sde", steps=3)["samples"]
    assert torch.equal(twin, base)
