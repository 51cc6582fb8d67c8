"""Real-ESRGAN's losses: the VGG19 perceptual loss is the weighted L1 of the right torchvision
layers, a file that is not VGG19 is named, and the U-Net discriminator gives per-pixel logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from nodes.infra.files import ModelFileError, save_safetensors
from nodes.training.esrgan_losses import UNetDiscriminatorSN, VGGPerceptualLoss, find_vgg19, gan_loss


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """Random VGG19 convolution weights in torchvision's key layout (features only: the classifier
    is never read), as a .safetensors in a models/vgg folder."""
    import torchvision

    torch.manual_seed(0)
    features = torchvision.models.vgg19(weights=None).features
    folder = tmp_path_factory.mktemp("models") / "vgg"
    path = save_safetensors({f"features.{k}": v for k, v in features.state_dict().items()}, folder / "vgg19-random.safetensors")
    return path, features.eval()


def test_perceptual_loss_is_the_weighted_l1_of_conv1_2_to_conv5_4(vgg_file) -> None:
    path, features = vgg_file
    loss = VGGPerceptualLoss(path)
    torch.manual_seed(1)
    sr, hr = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = torch.zeros(())
    # conv1_2, conv2_2, conv3_4, conv4_4, conv5_4: outputs of torchvision's features[:i + 1], before the ReLU
    for index, weight in ((2, 0.1), (7, 0.1), (16, 1.0), (25, 1.0), (34, 1.0)):
        head = features[: index + 1]
        with torch.no_grad():
            expected = expected + weight * F.l1_loss(head((sr - mean) / std), head((hr - mean) / std))
    with torch.no_grad():
        got = loss(sr, hr)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert float(loss(hr, hr)) == 0.0
    sr.requires_grad_(True)
    loss(sr, hr).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())  # VGG stays frozen


def test_vgg_file_is_found_or_named(vgg_file, tmp_path: Path) -> None:
    path, _ = vgg_file
    assert find_vgg19([tmp_path, path.parent]) == path
    with pytest.raises(FileNotFoundError, match=r"vgg19-dcbc4e0d.pth .* in .*empty; set perceptual_weight to 0"):
        find_vgg19([tmp_path / "empty"])


def test_a_file_that_is_not_vgg19_is_refused(tmp_path: Path) -> None:
    path = save_safetensors({"features.0.weight": torch.zeros(8, 3, 3, 3)}, tmp_path / "vgg19-wrong.safetensors")
    with pytest.raises(ModelFileError, match="vgg19-wrong.safetensors: not torchvision's VGG19 weights"):
        VGGPerceptualLoss(path)


def test_discriminator_gives_per_pixel_logits_with_spectral_norm() -> None:
    torch.manual_seed(0)
    disc = UNetDiscriminatorSN(3, 8)
    out = disc(torch.rand(2, 3, 32, 48))
    assert out.shape == (2, 1, 32, 48)
    inner = [disc.down[0], disc.down[2], disc.up[1], disc.head[0]]
    assert all(hasattr(conv, "parametrizations") and "weight" in conv.parametrizations for conv in inner)
    assert not hasattr(disc.conv0, "parametrizations") and not hasattr(disc.out, "parametrizations")


def test_gan_loss_is_binary_cross_entropy() -> None:
    logits = torch.tensor([[0.0, 2.0]])
    assert float(gan_loss(torch.zeros(3), real=True)) == pytest.approx(float(torch.log(torch.tensor(2.0))))
    assert float(gan_loss(logits, real=False)) == pytest.approx(float(F.softplus(logits).mean()))
