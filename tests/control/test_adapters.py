"""T2I-Adapters give diffusers' StableDiffusionAdapterPipeline image; "diff" ControlNets get the base
model's weights added by DiffControlNetLoader."""

from __future__ import annotations

import pytest
import torch

from control_helpers import control_image, graph_image
from diffusion_helpers import NEGATIVE, POSITIVE, load, txt2img
from nodes.control.nodes_loaders import ControlNetLoader, DiffControlNetLoader
from nodes.diffusion.samplers import build_scheduler
from nodes.infra.files import read_state_dict, save_safetensors
from nodes.infra.model_manager import manager_from

SD15 = "tiny-sd15.safetensors"
ADAPTER = "tiny-t2i-adapter-sd15"


@pytest.mark.slow
def test_t2i_adapter_matches_adapter_pipeline(make_ctx) -> None:
    import diffusers

    ctx = make_ctx()
    hint = control_image(5)
    image = graph_image(ctx, SD15, [(ADAPTER, hint, 0.9, 0.0, 1.0)])
    assert (image - txt2img(ctx, SD15)).abs().max() > 1e-2, "the adapter changed nothing"
    manager = manager_from(ctx.services)
    model, clip, vae = load(ctx, SD15)
    adapter = manager.ensure_loaded(ControlNetLoader().run(ctx, control_net_name=ADAPTER)[0].ref)
    pipe = diffusers.StableDiffusionAdapterPipeline(
        vae=manager.ensure_loaded(vae.ref), text_encoder=manager.ensure_loaded(clip.refs[0]),
        tokenizer=clip.tokenizers()[0], unet=manager.ensure_loaded(model.ref), adapter=adapter,
        scheduler=build_scheduler(model.scheduler_config, "euler", "normal"), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(POSITIVE, image=hint.permute(0, 3, 1, 2), negative_prompt=NEGATIVE, height=64, width=64,
               num_inference_steps=4, guidance_scale=7.0, generator=torch.Generator().manual_seed(42),
               adapter_conditioning_scale=0.9, output_type="pt").images
    ref = torch.as_tensor(ref)  # this pipeline hands "pt" back as a numpy array
    ref = ref.permute(0, 2, 3, 1) if ref.shape[1] == 3 else ref
    assert (image - ref).abs().max() < 1e-4


def test_diff_controlnet_adds_the_base_model(make_ctx, zoo_root) -> None:
    ctx = make_ctx()
    manager = manager_from(ctx.services)
    model, _, _ = load(ctx, SD15)
    full = ControlNetLoader().run(ctx, control_net_name="tiny-controlnet-sd15.safetensors")[0]
    full_sd = manager.ensure_loaded(full.ref).state_dict()
    unet_sd = manager.ensure_loaded(model.ref).state_dict()
    shared = [k for k in full_sd if k in unet_sd and unet_sd[k].shape == full_sd[k].shape]
    assert len(shared) > 20
    sd, metadata = read_state_dict(zoo_root / "controlnet" / "tiny-controlnet-sd15.safetensors")
    diff = {k: v - unet_sd[k] if k in shared else v for k, v in sd.items()}
    diff["difference"] = torch.zeros(1)
    save_safetensors(diff, zoo_root / "controlnet" / "tiny-diff-controlnet-sd15.safetensors", metadata)
    loaded = DiffControlNetLoader().run(ctx, model=model, control_net_name="tiny-diff-controlnet-sd15.safetensors")[0]
    got = manager.ensure_loaded(loaded.ref).state_dict()
    assert all(torch.allclose(got[k], full_sd[k], atol=1e-6) for k in full_sd)
    (zoo_root / "controlnet" / "tiny-diff-controlnet-sd15.safetensors").unlink()


def test_one_channel_adapter_sees_the_grey_hint_as_the_adapter_pipeline(make_ctx, zoo_root) -> None:
    """Sketch adapters (in_channels 1) get the hint's channel mean, as ComfyUI gives them; an RGB hint
    used to fail the sampler with a conv channel mismatch."""
    import diffusers

    diffusers.T2IAdapter(in_channels=1, channels=[32, 64], num_res_blocks=1, downscale_factor=8,
                         adapter_type="full_adapter").save_pretrained(zoo_root / "controlnet" / "tiny-grey-adapter")
    ctx = make_ctx()
    hint = control_image(6)[..., :1].repeat(1, 1, 1, 3)  # a grey sketch as IMAGE
    image = graph_image(ctx, SD15, [("tiny-grey-adapter", hint, 1.0, 0.0, 1.0)], steps=2)
    manager = manager_from(ctx.services)
    model, clip, vae = load(ctx, SD15)
    adapter = manager.ensure_loaded(ControlNetLoader().run(ctx, control_net_name="tiny-grey-adapter")[0].ref)
    pipe = diffusers.StableDiffusionAdapterPipeline(
        vae=manager.ensure_loaded(vae.ref), text_encoder=manager.ensure_loaded(clip.refs[0]),
        tokenizer=clip.tokenizers()[0], unet=manager.ensure_loaded(model.ref), adapter=adapter,
        scheduler=build_scheduler(model.scheduler_config, "euler", "normal"), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(POSITIVE, image=hint[..., :1].permute(0, 3, 1, 2), negative_prompt=NEGATIVE, height=64, width=64,
               num_inference_steps=2, guidance_scale=7.0, generator=torch.Generator().manual_seed(42),
               output_type="pt").images
    ref = torch.as_tensor(ref)
    ref = ref.permute(0, 2, 3, 1) if ref.shape[1] == 3 else ref
    assert (image - ref).abs().max() < 1e-4


@pytest.mark.parametrize(("factor", "first_block", "ok"), [(8, "CrossAttnDownBlock2D", True), (16, "DownBlock2D", True),
                                                           (8, "DownBlock2D", False), (16, "CrossAttnDownBlock2D", False)])
def test_adapter_for_the_other_family_is_named(factor, first_block, ok) -> None:
    from nodes.control.hook import _check_adapter_scale

    unet = {"down_block_types": [first_block, "CrossAttnDownBlock2D"]}
    if ok:
        _check_adapter_scale("a", {"downscale_factor": factor}, unet)
    else:
        with pytest.raises(ValueError, match="SD1.5 adapter on an SDXL model or the other way round"):
            _check_adapter_scale("a", {"downscale_factor": factor}, unet)


def _to_original(sd: dict[str, torch.Tensor], num_res_blocks: int) -> dict[str, torch.Tensor]:
    """diffusers T2IAdapter keys -> the original TencentARC full-adapter layout, as published: one flat
    ``body`` of levels x resnets, a level's channel-changing ``in_conv`` on its first resnet."""
    import re

    out = {}
    for key, value in sd.items():
        if key.startswith("adapter.conv_in."):
            out[key.removeprefix("adapter.")] = value
        elif m := re.fullmatch(r"adapter\.body\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            out[f"body.{int(m[1]) * num_res_blocks + int(m[2])}.{m[3]}"] = value
        elif m := re.fullmatch(r"adapter\.body\.(\d+)\.in_conv\.(.+)", key):
            out[f"body.{int(m[1]) * num_res_blocks}.in_conv.{m[2]}"] = value
        else:
            raise AssertionError(f"a T2IAdapter tensor this test does not know: {key}")
    return out


def test_original_layout_adapter_is_the_diffusers_adapter(make_ctx, zoo_root) -> None:
    folder = zoo_root / "controlnet" / ADAPTER
    sd, _ = read_state_dict(folder / "diffusion_pytorch_model.safetensors")
    original = zoo_root / "controlnet" / "tiny-t2iadapter_canny_sd15v2.pth"
    torch.save(_to_original(sd, num_res_blocks=1), original)
    try:
        ctx = make_ctx()
        manager = manager_from(ctx.services)
        value = ControlNetLoader().run(ctx, control_net_name=original.name)[0]
        assert value.kind == "t2i_adapter"
        a = manager.ensure_loaded(ControlNetLoader().run(ctx, control_net_name=ADAPTER)[0].ref).state_dict()
        b = manager.ensure_loaded(value.ref).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        hint = control_image(7)
        reference = graph_image(ctx, SD15, [(ADAPTER, hint, 1.0, 0.0, 1.0)], steps=2)
        assert torch.equal(graph_image(ctx, SD15, [(original.name, hint, 1.0, 0.0, 1.0)], steps=2), reference)
    finally:
        original.unlink()


@pytest.mark.parametrize(("channels", "blocks", "in_channels"), [([32, 64, 64], 2, 3), ([16, 32], 3, 1)])
def test_original_layout_adapters_of_other_shapes(tmp_path, channels, blocks, in_channels) -> None:
    """More resnets per level, a level that keeps its width (no in_conv) and a one-channel (sketch) input."""
    import diffusers

    from nodes.control.loading import build, read_control

    torch.manual_seed(0)
    adapter = diffusers.T2IAdapter(in_channels=in_channels, channels=channels, num_res_blocks=blocks,
                                   downscale_factor=8, adapter_type="full_adapter")
    path = tmp_path / "t2iadapter_sketch_sd15v2.pth"
    torch.save(_to_original(adapter.state_dict(), blocks), path)
    loaded = build(*read_control(path), name=path.name)
    x = torch.rand(1, in_channels, 64, 64)
    assert all(torch.equal(a, b) for a, b in zip(adapter(x), loaded(x)))


@pytest.mark.parametrize(("dropped", "reason"), [("body.0.", "no body.0.\\* block"),
                                                 ("body.3.", "no body.3.\\* block"),
                                                 ("body.5.", "5 body blocks and in_conv at \\[2, 4\\]"),
                                                 ("body.2.in_conv.", "cannot tell its feature levels")])
def test_damaged_original_layout_adapter_is_a_model_file_error(tmp_path, dropped, reason) -> None:
    import diffusers

    from nodes.control.loading import build, read_control
    from nodes.infra.files import ModelFileError

    adapter = diffusers.T2IAdapter(in_channels=3, channels=[16, 32, 64], num_res_blocks=2, downscale_factor=8,
                                   adapter_type="full_adapter")
    path = tmp_path / "t2iadapter_depth_sd14v1.pth"
    torch.save({k: v for k, v in _to_original(adapter.state_dict(), 2).items() if not k.startswith(dropped)}, path)
    with pytest.raises(ModelFileError, match=f"t2iadapter_depth_sd14v1.pth: .*{reason}"):
        build(*read_control(path), name=path.name)


@pytest.mark.parametrize(("keys", "kind"), [
    (["body.0.in_conv.weight", "body.0.body.0.block1.weight"], "light T2I-Adapter"),
    (["style_embedding", "ln_pre.weight"], "style adapter"),
])
def test_light_and_style_adapters_are_named(tmp_path, keys, kind) -> None:
    from nodes.control.loading import read_control
    from nodes.infra.files import ModelFileError

    path = tmp_path / "t2iadapter_color_sd14v1.pth"
    torch.save({k: torch.zeros(1) for k in keys}, path)
    with pytest.raises(ModelFileError, match=f"t2iadapter_color_sd14v1.pth: .*{kind}.*not supported"):
        read_control(path)
