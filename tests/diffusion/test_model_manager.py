"""Load policies and the bounded description cache owned by the model manager."""

from __future__ import annotations

import torch

from nodes.diffusion import loading
from nodes.infra.cache import BoundedCache
from nodes.infra.model_manager import LoadPolicy, ModelManager, manager_from


def _load(make_ctx):
    ctx = make_ctx()
    path = ctx.folders.model_path("checkpoints", "tiny-sd15.safetensors")
    manager = manager_from(ctx.services)
    model, _, vae = loading.load_checkpoint_models(manager, path, tokenizer_root=loading.tokenizer_root_for(ctx.folders))
    return ctx, manager, model, vae


def test_normal_load_is_frozen_and_trainable_load_is_not(make_ctx) -> None:
    _, manager, model, _ = _load(make_ctx)
    frozen = manager.ensure_loaded(model.ref)
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    trainable = manager.ensure_loaded(model.ref.with_policy(trainable=True))
    assert trainable is not frozen  # training must not touch the module sampling shares
    assert trainable.training and all(p.requires_grad for p in trainable.parameters())
    assert not any(p.requires_grad for p in frozen.parameters())


def test_policy_sets_precision_not_the_part_name() -> None:
    manager = ModelManager(device="cpu")
    module = torch.nn.Linear(2, 2)
    assert manager._prepare(module, LoadPolicy(dtype=torch.float64)).weight.dtype == torch.float64
    assert manager._prepare(torch.nn.Linear(2, 2), LoadPolicy()).weight.dtype == torch.float32  # CPU: fp32


def test_vae_policy_keeps_fp32(make_ctx) -> None:
    _, _, _, vae = _load(make_ctx)
    assert vae.ref.policy.dtype == torch.float32 and vae.ref.policy.compile is False


def test_free_clears_the_descriptions(make_ctx) -> None:
    from nodes.diffusion import nodeloom_free_resources

    ctx, manager, model, _ = _load(make_ctx)
    assert len(manager.descriptions) == 1
    nodeloom_free_resources(services=ctx.services, unload_models=True, free_memory=False)
    assert len(manager.descriptions) == 0 and model.ref not in manager
    _load(make_ctx)  # and the file loads again
    assert len(manager.descriptions) == 1


def test_bounded_cache_drops_the_least_recently_used() -> None:
    cache = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and len(cache) == 2
