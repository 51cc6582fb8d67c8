"""ControlNets applied in a graph give diffusers' ControlNet pipelines' image (SD1.5 and SDXL, one and
two stacked, with step windows), and act only where and when they are applied."""

from __future__ import annotations

import pytest
import torch

from control_helpers import control_image, graph_image, pipeline_image
from diffusion_helpers import NEGATIVE, POSITIVE, encode, load, txt2img
from nodes.control.nodes_apply import ControlNetApply
from nodes.control.nodes_loaders import ControlNetLoader
from nodes.diffusion.nodes_latent import VAEDecode
from nodes.diffusion.nodes_sampling import KSampler, KSamplerAdvanced

TOL = 1e-4
SD15, SDXL = "tiny-sd15.safetensors", "tiny-sdxl.safetensors"
CN15, CNXL = "tiny-controlnet-sd15.safetensors", "tiny-controlnet-sdxl"


@pytest.mark.parametrize(("ckpt", "net"), [(SD15, CN15), pytest.param(SDXL, CNXL, marks=pytest.mark.slow)])
def test_one_controlnet_matches_pipeline(make_ctx, ckpt: str, net: str) -> None:
    ctx = make_ctx()
    controls = [(net, control_image(1), 0.8, 0.0, 1.0)]
    image = graph_image(ctx, ckpt, controls)
    assert (image - txt2img(ctx, ckpt)).abs().max() > 1e-2, "the ControlNet changed nothing"
    assert (image - pipeline_image(ctx, ckpt, controls)).abs().max() < TOL


@pytest.mark.slow
@pytest.mark.parametrize(("ckpt", "net"), [(SD15, CN15), (SDXL, CNXL)])
def test_two_stacked_controlnets_with_windows_match_multicontrolnet(make_ctx, ckpt: str, net: str) -> None:
    ctx = make_ctx()
    controls = [(net, control_image(1), 0.5, 0.0, 0.5), (net, control_image(2), 0.6, 0.25, 1.0)]
    image = graph_image(ctx, ckpt, controls)
    assert (image - pipeline_image(ctx, ckpt, controls)).abs().max() < TOL
    only_first = graph_image(ctx, ckpt, controls[:1])
    assert (image - only_first).abs().max() > 1e-3, "the second ControlNet changed nothing"


def test_window_outside_all_steps_is_plain_txt2img(make_ctx) -> None:
    ctx = make_ctx()
    # With 4 steps, step i acts when i/4 >= start and (i+1)/4 <= end: [0.9, 1.0] holds none.
    image = graph_image(ctx, SD15, [(CN15, control_image(1), 1.0, 0.9, 1.0)])
    assert torch.equal(image, txt2img(ctx, SD15))


@pytest.mark.slow
def test_legacy_apply_controls_the_positive_only(make_ctx) -> None:
    ctx = make_ctx()
    model, clip, vae = load(ctx, SD15)
    net = ControlNetLoader().run(ctx, control_net_name=CN15)[0]
    positive = ControlNetApply().run(ctx, conditioning=encode(ctx, clip, POSITIVE), control_net=net,
                                     image=control_image(1), strength=1.0)[0]
    negative = encode(ctx, clip, NEGATIVE)
    assert "control" in positive[0][1] and "control" not in negative[0][1]
    latent = KSampler().run(ctx, model=model, seed=42, steps=4, cfg=7.0, sampler_name="euler", scheduler="normal",
                            positive=positive, negative=negative, latent_image={"samples": torch.zeros(1, 4, 8, 8)},
                            denoise=1.0)[0]
    image = VAEDecode().run(ctx, samples=latent, vae=vae)[0]
    both = [(CN15, control_image(1), 1.0, 0.0, 1.0)]
    assert (image - txt2img(ctx, SD15)).abs().max() > 1e-3
    assert (image - graph_image(ctx, SD15, both)).abs().max() > 1e-4, "the negative got the ControlNet too"


@pytest.mark.slow
def test_controlnet_acts_inside_ksampler_advanced(make_ctx) -> None:
    ctx = make_ctx()
    model, clip, vae = load(ctx, SD15)
    net = ControlNetLoader().run(ctx, control_net_name=CN15)[0]
    from nodes.control.nodes_apply import ControlNetApplyAdvanced

    pos, neg = encode(ctx, clip, POSITIVE), encode(ctx, clip, NEGATIVE)
    cpos, cneg = ControlNetApplyAdvanced().run(ctx, positive=pos, negative=neg, control_net=net, image=control_image(1),
                                               strength=1.0, start_percent=0.0, end_percent=1.0)

    def run(p, n):
        return KSamplerAdvanced().run(ctx, model=model, add_noise="enable", noise_seed=42, steps=4, cfg=7.0,
                                      sampler_name="euler", scheduler="normal", positive=p, negative=n,
                                      latent_image={"samples": torch.zeros(1, 4, 8, 8)}, start_at_step=0,
                                      end_at_step=10000, return_with_leftover_noise="disable")[0]["samples"]

    assert (run(cpos, cneg) - run(pos, neg)).abs().max() > 1e-3


def test_sd15_controlnet_on_sdxl_names_the_mismatch(make_ctx) -> None:
    ctx = make_ctx()
    with pytest.raises(RuntimeError, match="cross_attention_dim"):
        graph_image(ctx, SDXL, [(CN15, control_image(1), 1.0, 0.0, 1.0)])


@pytest.mark.slow
def test_original_and_diffusers_layout_give_the_same_image(make_ctx) -> None:
    ctx = make_ctx()
    hint = control_image(3)
    diffusers_layout = graph_image(ctx, SD15, [(CN15, hint, 1.0, 0.0, 1.0)])
    original_layout = graph_image(ctx, SD15, [("tiny-controlnet-sd15-original.safetensors", hint, 1.0, 0.0, 1.0)])
    assert torch.equal(diffusers_layout, original_layout)
