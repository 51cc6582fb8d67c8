"""Our LDM -> diffusers key tables give exactly what diffusers' single-file converters give, on
every single file of the tiny zoo (SD1.5, SD1.5 inpainting, SD2 eps/v, SDXL, the standalone VAE).
diffusers' converters are the reference here only; the loader never imports them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nodes.diffusion.checkpoint import checkpoint_spec, detect_family
from nodes.diffusion.families import family
from nodes.infra import ldm_keys
from nodes.infra.files import read_state_dict

CHECKPOINTS = ["tiny-sd15", "tiny-sd15-inpainting", "tiny-sd2-eps", "tiny-sd2-v", "tiny-sdxl"]


def _assert_same(ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    assert sorted(ours) == sorted(reference)
    for key, value in reference.items():
        assert ours[key].shape == value.shape, key
        assert torch.equal(ours[key], value), key


@pytest.fixture(scope="module", params=CHECKPOINTS)
def single_file(request: pytest.FixtureRequest, zoo_root: Path) -> tuple[dict[str, torch.Tensor], dict]:
    path = zoo_root / "checkpoints" / f"{request.param}.safetensors"
    sd, metadata = read_state_dict(path, dtype=torch.float32)
    return sd, checkpoint_spec(path, sd, metadata)


def test_unet_keys_equal_diffusers_converter(single_file) -> None:
    from diffusers.loaders import single_file_utils as sfu

    sd, spec = single_file
    ours = ldm_keys.unet_from_ldm(sd, spec["unet"])
    _assert_same(ours, sfu.convert_ldm_unet_checkpoint(sd, spec["unet"]))
    # Every UNet parameter is named: nothing of the file is dropped, nothing is missing.
    from diffusers import UNet2DConditionModel

    expected = UNet2DConditionModel.from_config(
        {k: v for k, v in spec["unet"].items() if not k.startswith("_")}).state_dict().keys()
    assert set(ours) == set(expected)
    assert len(ours) == sum(k.startswith(ldm_keys.UNET_PREFIX) for k in sd)


def test_vae_keys_equal_diffusers_converter(single_file) -> None:
    from diffusers.loaders import single_file_utils as sfu

    sd, spec = single_file
    plain = {k[len(ldm_keys.VAE_PREFIX):]: v for k, v in sd.items() if k.startswith(ldm_keys.VAE_PREFIX)}
    ours = ldm_keys.vae_from_ldm(plain, spec["vae"])
    reference = sfu.convert_ldm_vae_checkpoint(plain, spec["vae"])
    _assert_same(ours, reference)
    assert any(v.ndim == 2 and ".attentions.0.to_q." in k for k, v in ours.items())  # 1x1 conv -> linear


def test_clip_keys_equal_diffusers_converter(single_file) -> None:
    from diffusers.loaders import single_file_utils as sfu

    sd, _ = single_file
    fam = family(detect_family(sd.keys()))
    clip = [te for te in fam.text_encoders if te.layout == "clip"]
    for te in clip:
        reference = sfu.convert_ldm_clip_checkpoint(sd)
        reference = {k if k.startswith(("text_model.", "text_projection")) else "text_model." + k: v
                     for k, v in reference.items()}
        _assert_same(ldm_keys.clip_from_ldm(sd, te.ldm_prefix), reference)


def test_round_trip_through_the_writer_tables(single_file) -> None:
    """unet_to_ldm (what the tiny zoo writes with) inverts unet_from_ldm, key for key."""
    sd, spec = single_file
    unet = {k: v for k, v in sd.items() if k.startswith(ldm_keys.UNET_PREFIX)}
    back = ldm_keys.prefixed(ldm_keys.unet_to_ldm(ldm_keys.unet_from_ldm(unet, spec["unet"]), spec["unet"]),
                             ldm_keys.UNET_PREFIX)
    assert sorted(back) == sorted(unet)


def test_standalone_vae_file_equals_diffusers_converter(zoo_root: Path) -> None:
    from diffusers.loaders import single_file_utils as sfu

    from nodes.diffusion.checkpoint import load_vae_file

    path = zoo_root / "vae" / "tiny-vae.safetensors"
    vae, config = load_vae_file(path)
    sd, _ = read_state_dict(path, dtype=torch.float32)
    if any(k.startswith("encoder.down_blocks.") for k in sd):
        pytest.skip("the tiny VAE is in diffusers layout")
    _assert_same(ldm_keys.vae_from_ldm(sd, config), sfu.convert_ldm_vae_checkpoint(sd, config))


def test_unknown_keys_are_left_out() -> None:
    config = {"block_out_channels": [4, 8], "layers_per_block": 1,
              "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
              "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]}
    t = torch.zeros(1)
    unet = ldm_keys.unet_from_ldm({ldm_keys.UNET_PREFIX + "out.2.weight": t, "model_ema.decay": t,
                                   ldm_keys.UNET_PREFIX + "output_blocks.1.1.conv.weight": t}, config)
    # Level 0 of the up path has no attention: its slot 1 is the upsampler.
    assert unet == {"conv_out.weight": t, "up_blocks.0.upsamplers.0.conv.weight": t}
    assert ldm_keys.vae_from_ldm({"decoder.up.1.upsample.conv.weight": t, "loss.w": t}, config) == {
        "decoder.up_blocks.0.upsamplers.0.conv.weight": t}


def test_loader_never_calls_diffusers_single_file_converters(zoo_root: Path, monkeypatch) -> None:
    from diffusers.loaders import single_file_utils as sfu

    from nodes.diffusion.checkpoint import load_checkpoint

    def refuse(*args, **kwargs):
        raise AssertionError("diffusers' single-file converter was called")

    for name in ("convert_ldm_unet_checkpoint", "convert_ldm_vae_checkpoint", "convert_ldm_clip_checkpoint"):
        monkeypatch.setattr(sfu, name, refuse)
    comp = load_checkpoint(zoo_root / "checkpoints" / "tiny-sdxl.safetensors",
                           tokenizer_root=lambda name: zoo_root / "clip_tokenizer" / name)
    assert comp.unet is not None and comp.vae is not None and len(comp.text_encoders) == 2
