"""The student UNet helpers: SLAM's training-only γ input."""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from nodes.training.students import GammaInput


def _unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, norm_num_groups=16, cross_attention_dim=32,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval()


def _call(unet: UNet2DConditionModel) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    x, text = torch.randn(3, 4, 8, 8, generator=gen), torch.randn(3, 5, 32, generator=gen)
    with torch.no_grad():
        return unet(x, torch.tensor([999, 499, 19]), encoder_hidden_states=text).sample


def test_gamma_input_is_exactly_nothing_at_gamma_one_and_when_disarmed() -> None:
    unet = _unet()
    plain = _call(unet)
    gamma = GammaInput(unet)
    torch.nn.init.normal_(gamma.proj.weight)  # as if trained
    gamma.set(torch.ones(3))
    assert torch.equal(_call(unet), plain)  # inference is γ = 1: the saved LoRA alone is the student
    gamma.set(None)
    assert torch.equal(_call(unet), plain)


def test_gamma_input_changes_the_prediction_by_gamma_and_trains() -> None:
    unet = _unet()
    plain = _call(unet)
    gamma = GammaInput(unet)
    gamma.set(torch.tensor([0.0, 0.5, 0.9]))
    assert torch.equal(_call(unet), plain)  # zero at start: the student starts as the teacher
    torch.nn.init.normal_(gamma.proj.weight)
    moved = (_call(unet) - plain).abs().flatten(1).amax(1)
    assert bool((moved > 1e-3).all()), moved  # every row of the batch reads its own γ
    gamma.proj.weight.grad = None
    x = torch.randn(3, 4, 8, 8)
    unet(x, torch.tensor([999, 499, 19]), encoder_hidden_states=torch.randn(3, 5, 32)).sample.square().mean().backward()
    assert gamma.proj.weight.grad is not None and float(gamma.proj.weight.grad.abs().sum()) > 0
