"""The denoiser seam: guidance strategies, per-model extras, hooks, the sampler registry."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nodes.diffusion.denoiser import Denoiser, DenoiserHooks, UNetInputs
from nodes.diffusion.families import SD15, SDXL
from nodes.diffusion.guidance import ClassifierFreeGuidance, ModelExtras, NoGuidance, choose_guidance
from nodes.diffusion.samplers import BUILTIN_SAMPLERS, DiffusersSampler, SamplerRegistry


class RecordingUNet(torch.nn.Module):
    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.config = config
        self.calls: list[dict[str, Any]] = []

    def forward(self, sample: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor]:
        self.calls.append(kwargs)
        return (sample * 0 + kwargs["encoder_hidden_states"].mean(dim=(1, 2))[:, None, None, None],)


def _cond(value: float, **extras: Any) -> list[list[Any]]:
    return [[torch.full((1, 77, 8), value), {"pooled_output": torch.zeros(1, 8), **extras}]]


def _denoiser(unet: RecordingUNet, cfg: float, spec: Any = SD15, hooks: Any = ()) -> Denoiser:
    return Denoiser(unet, spec, positive=_cond(1.0), negative=_cond(0.0), guidance=choose_guidance(cfg, unet.config),
                    extras=ModelExtras(spec, unet.config, cfg, (8, 8)), batch=2, steps=4, hooks=hooks)


def test_cfg_batches_negative_then_positive() -> None:
    unet = RecordingUNet()
    denoiser = _denoiser(unet, 7.0)
    assert denoiser.copies == 2
    eps = denoiser(torch.zeros(4, 4, 8, 8), torch.tensor(10), 0)
    assert torch.allclose(eps, torch.full_like(eps, 7.0))  # 0 + 7 * (1 - 0)
    assert unet.calls[0]["added_cond_kwargs"] is None and "timestep_cond" not in unet.calls[0]


def test_no_guidance_is_one_pass() -> None:
    for cfg, config, sampler in ((1.0, {}, "cfg"), (7.0, {}, "none"), (7.0, {"time_cond_proj_dim": 8}, "cfg")):
        assert isinstance(choose_guidance(cfg, config, sampler), NoGuidance)
    assert isinstance(choose_guidance(1.5, {}), ClassifierFreeGuidance)
    unet = RecordingUNet()
    denoiser = _denoiser(unet, 1.0)
    eps = denoiser(torch.zeros(2, 4, 8, 8), torch.tensor(10), 0)
    assert denoiser.copies == 1 and len(unet.calls) == 1 and torch.allclose(eps, torch.ones_like(eps))


def test_timestep_cond_is_the_pipelines_guidance_embedding() -> None:
    from diffusers import StableDiffusionPipeline

    unet = RecordingUNet(time_cond_proj_dim=16)
    _denoiser(unet, 8.5)(torch.zeros(2, 4, 8, 8), torch.tensor(10), 0)
    expected = StableDiffusionPipeline.get_guidance_scale_embedding(None, torch.tensor(7.5).repeat(2), embedding_dim=16)
    assert torch.allclose(unet.calls[0]["timestep_cond"], expected)


def test_sdxl_extras_carry_size_conditioning() -> None:
    unet = RecordingUNet()
    _denoiser(unet, 7.0, SDXL)(torch.zeros(4, 4, 8, 8), torch.tensor(10), 0)
    added = unet.calls[0]["added_cond_kwargs"]
    assert added["time_ids"].shape == (4, 6) and added["time_ids"][0].tolist() == [64, 64, 0, 0, 64, 64]


class Residual:
    def __init__(self, name: str, value: float) -> None:
        self.name, self.value = name, value

    def __call__(self, call: Any) -> UNetInputs:
        return UNetInputs(mid_block_additional_residual=torch.full((call.sample.shape[0], 1), self.value),
                          added_cond_kwargs={self.name: torch.ones(1)})


def test_hooks_residuals_add_up_and_reach_the_call() -> None:
    unet = RecordingUNet()
    _denoiser(unet, 7.0, hooks=[Residual("a", 1.0), Residual("b", 2.0)])(torch.zeros(4, 4, 8, 8), torch.tensor(1), 0)
    kwargs = unet.calls[0]
    assert torch.equal(kwargs["mid_block_additional_residual"], torch.full((4, 1), 3.0))
    assert set(kwargs["added_cond_kwargs"]) == {"a", "b"}


def test_hook_registry_checks_entries() -> None:
    hooks = DenoiserHooks()
    hooks.register(Residual("a", 1.0), source="plugin 'x'")
    hooks.register(Residual("a", 2.0), source="plugin 'x'")  # the same plugin again: replaced
    assert [h.value for h in hooks] == [2.0]
    with pytest.raises(ValueError, match="already registered by plugin 'x'"):
        hooks.register(Residual("a", 1.0), source="plugin 'y'")
    with pytest.raises(ValueError, match="not a DenoiserHook"):
        hooks.register(object(), source="plugin 'y'")  # type: ignore[arg-type]


def test_sampler_registry_factories() -> None:
    registry = SamplerRegistry(BUILTIN_SAMPLERS)
    registry.register("my_ddim", DiffusersSampler("DDIMScheduler", {"set_alpha_to_one": True}), source="plugin 'p'")
    assert registry.names()[-1] == "my_ddim"
    config = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "_class_name": "PNDMScheduler"}
    scheduler = registry.build(config, "my_ddim", "simple")
    assert type(scheduler).__name__ == "DDIMScheduler" and scheduler.config.set_alpha_to_one
    assert scheduler.config.timestep_spacing == "trailing"
    assert "does not support the 'karras'" in registry.check("my_ddim", "karras")
    with pytest.raises(ValueError, match="already registered by builtin"):
        registry.register("euler", DiffusersSampler("DDIMScheduler"), source="plugin 'p'")
    with pytest.raises(ValueError, match="not a SamplerFactory"):
        registry.register("bad", object(), source="plugin 'p'")  # type: ignore[arg-type]


def test_docs_table_is_generated_from_the_registry() -> None:
    from pathlib import Path

    from nodes.diffusion.samplers import describe_mapping

    docs = (Path(__file__).resolve().parents[2] / "docs" / "samplers.md").read_text()
    assert describe_mapping() in docs


def test_an_area_in_sd_cells_covers_the_same_pixels_of_a_pixel_family_latent() -> None:
    from nodes.diffusion.denoiser import _area
    from nodes.diffusion.nodes_conditioning import ConditioningSetArea

    conditioning = [[torch.zeros(1, 77, 8), {}]]
    [[_, extras]] = ConditioningSetArea().run(None, conditioning=conditioning, width=64, height=64, x=64, y=0,
                                              strength=1.0)[0]
    # A 128x128 image: SD latents [.., 16, 16] (8 px cells), pixel latents [.., 64, 64] (2 px cells).
    assert _area(extras, torch.Size([1, 4, 16, 16])) == (0, 8, 8, 8)
    assert _area(extras, torch.Size([1, 12, 64, 64]), 4) == (0, 32, 32, 32)


def test_conditioning_of_another_text_encoder_width_is_refused_naming_the_side() -> None:
    unet = RecordingUNet(cross_attention_dim=128)  # the demo model's width; _cond is 8 wide
    with pytest.raises(ValueError, match=r"positive: the conditioning is 8 wide, this model's UNet takes 128"):
        _denoiser(unet, 1.0)
    assert _denoiser(RecordingUNet(cross_attention_dim=8), 7.0).copies == 2
