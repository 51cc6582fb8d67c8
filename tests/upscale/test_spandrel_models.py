"""Upscale model files through spandrel: the published Real-ESRGAN layout, .pth and .safetensors,
precision choice, and a clear error for a file spandrel cannot identify."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from nodes.infra.files import ModelFileError
from nodes.infra.model_manager import ModelManager
from nodes.upscale.spandrel_models import UpscaleInfo, compute_dtype, load_upscale_model
from nodes.upscale.nodes_upscale import upscale_image


def realesrgan_x4plus_state(*, blocks: int = 23, features: int = 64, grow: int = 32) -> dict[str, torch.Tensor]:
    """Random weights in the key layout and shapes of the published RealESRGAN_x4plus.pth
    (basicsr's RRDBNet: ``conv_first``, ``body.N.rdbK.convM``, ``conv_body``, ``conv_up1/2``,
    ``conv_hr``, ``conv_last``)."""
    generator = torch.Generator().manual_seed(0)

    def conv(out: int, inp: int) -> tuple[torch.Tensor, torch.Tensor]:
        weight = torch.randn(out, inp, 3, 3, generator=generator) * (0.1 * (2 / (inp * 9)) ** 0.5)
        return weight, torch.zeros(out)

    layers = {"conv_first": conv(features, 3)}
    for block in range(blocks):
        for rdb in (1, 2, 3):
            for index in range(1, 6):
                out = features if index == 5 else grow
                layers[f"body.{block}.rdb{rdb}.conv{index}"] = conv(out, features + (index - 1) * grow)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        layers[name] = conv(features, features)
    layers["conv_last"] = conv(3, features)
    return {f"{name}.{kind}": tensor for name, pair in layers.items() for kind, tensor in zip(("weight", "bias"), pair)}


@pytest.mark.slow
def test_full_size_realesrgan_x4plus_pth_loads_and_upscales_4x(tmp_path: Path) -> None:
    state = realesrgan_x4plus_state()
    path = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params_ema": state}, path)  # as published: the EMA weights under params_ema
    manager = ModelManager(device="cpu")
    model = load_upscale_model(manager, path)
    assert (model.info.architecture, model.scale, model.info.input_channels) == ("ESRGAN", 4, 3)
    with manager.use(model.ref) as (network,):
        params = list(network.parameters())
        # Every published tensor, and nothing else, is in the network (16.7M parameters).
        assert sum(p.numel() for p in params) == sum(t.numel() for t in state.values()) == 16_697_987
        assert torch.isclose(sum(p.double().abs().sum() for p in params),
                             sum(t.double().abs().sum() for t in state.values()))
    out = upscale_image(manager, model, torch.rand(1, 12, 20, 3))
    assert out.shape == (1, 48, 80, 3) and out.dtype == torch.float32


def test_pth_and_safetensors_of_the_same_weights_upscale_alike(zoo_root: Path, tmp_path: Path) -> None:
    from nodes.infra.files import read_state_dict

    tensors, _ = read_state_dict(zoo_root / "upscale_models" / "tiny-esrgan-x4.safetensors")
    pth = tmp_path / "tiny.pth"
    torch.save({"params": {f"module.{k}": v for k, v in tensors.items()}}, pth)  # DataParallel-style prefix
    manager, image = ModelManager(device="cpu"), torch.rand(1, 16, 24, 3)
    from_st = upscale_image(manager, load_upscale_model(manager, zoo_root / "upscale_models" / "tiny-esrgan-x4.safetensors"),
                            image)
    from_pth = upscale_image(manager, load_upscale_model(manager, pth), image)
    torch.testing.assert_close(from_pth, from_st, rtol=0, atol=0)
    assert from_st.shape == (1, 64, 96, 3)


def test_a_file_spandrel_cannot_identify_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "not_an_upscaler.safetensors"
    save_file({"encoder.layer.weight": torch.zeros(4, 4)}, str(path))
    with pytest.raises(ModelFileError, match=r"not_an_upscaler\.safetensors: spandrel cannot identify"):
        load_upscale_model(ModelManager(device="cpu"), path)



def test_a_pickle_with_a_key_that_is_not_a_string_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "int_keys.pth"
    torch.save({1: torch.zeros(1), 2: torch.zeros(1)}, path)
    with pytest.raises(ModelFileError, match=r"int_keys\.pth: not a state dict of named tensors"):
        load_upscale_model(ModelManager(device="cpu"), path)

def test_a_pickle_with_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"params_ema": {"conv_first.weight": torch.zeros(1)}, "hook": print}, path)
    with pytest.raises(ModelFileError, match=r"evil\.pth was refused: it is a pickle that contains code"):
        load_upscale_model(ModelManager(device="cpu"), path)


@pytest.mark.parametrize(("manager_dtype", "half", "bf16", "expected"), [
    (torch.bfloat16, True, True, torch.bfloat16),
    (torch.bfloat16, True, False, torch.float16),
    (torch.float16, True, True, torch.float16),
    (torch.bfloat16, False, False, torch.float32),
])
def test_reduced_precision_on_gpu_only_where_the_architecture_supports_it(
        manager_dtype: torch.dtype, half: bool, bf16: bool, expected: torch.dtype) -> None:
    info = UpscaleInfo("X", 4, 3, 3, "SUPPORTED", 1, supports_half=half, supports_bfloat16=bf16)
    assert compute_dtype(ModelManager(device="cuda", dtype=manager_dtype), info) == expected
    assert compute_dtype(ModelManager(device="cpu"), info) == torch.float32
