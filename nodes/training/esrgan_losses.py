"""The losses of ESRGAN fine-tuning as Real-ESRGAN trains (Wang et al. 2021, arXiv 2107.10833,
github.com/xinntao/Real-ESRGAN ``options/finetune_realesrgan_x4plus.yml``; BasicSR's losses):

- pixel: L1 between the super-resolved image and the HR image;
- perceptual: L1 between VGG19 features of the two (ImageNet-normalised 0..1 inputs), taken after
  the convolutions conv1_2, conv2_2, conv3_4, conv4_4, conv5_4 (before their ReLU) with layer
  weights 0.1, 0.1, 1, 1, 1; the VGG19 weights are torchvision's (``vgg19-dcbc4e0d.pth``) read from
  ``models/vgg/``, never downloaded;
- GAN: a U-Net discriminator with spectral normalisation giving a realness logit per pixel,
  trained with binary cross-entropy (vanilla GAN; real 1, fake 0).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from nodes.infra.files import ModelFileError, read_pickle, read_state_dict

VGG_FOLDER = "vgg"
VGG_FILE = "vgg19-dcbc4e0d.pth"  # torchvision's file name for its ImageNet VGG19
# torchvision vgg19().features index of each convolution Real-ESRGAN reads, and its weight.
VGG_LAYERS: dict[int, float] = {2: 0.1, 7: 0.1, 16: 1.0, 25: 1.0, 34: 1.0}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class UNetDiscriminatorSN(nn.Module):
    """Real-ESRGAN's discriminator: a 3-level U-Net (strided 4x4 convolutions down, bilinear x2 up
    with skip additions), spectral normalisation on every inner convolution, LeakyReLU 0.2.
    [B, C, H, W] (H, W multiples of 8) -> [B, 1, H, W] logits."""

    def __init__(self, in_channels: int = 3, features: int = 64) -> None:
        super().__init__()
        f = features
        self.conv0 = nn.Conv2d(in_channels, f, 3, 1, 1)
        self.down = nn.ModuleList(spectral_norm(nn.Conv2d(a, b, 4, 2, 1, bias=False))
                                  for a, b in ((f, 2 * f), (2 * f, 4 * f), (4 * f, 8 * f)))
        self.up = nn.ModuleList(spectral_norm(nn.Conv2d(a, b, 3, 1, 1, bias=False))
                                for a, b in ((8 * f, 4 * f), (4 * f, 2 * f), (2 * f, f)))
        self.head = nn.ModuleList(spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False)) for _ in range(2))
        self.out = nn.Conv2d(f, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [F.leaky_relu(self.conv0(x), 0.2)]
        for conv in self.down:
            skips.append(F.leaky_relu(conv(skips[-1]), 0.2))
        h = skips.pop()
        for conv in self.up:
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
            h = F.leaky_relu(conv(h), 0.2) + skips.pop()
        for conv in self.head:
            h = F.leaky_relu(conv(h), 0.2)
        return self.out(h)


def gan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Binary cross-entropy of the discriminator's logits against all-real or all-fake targets."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def find_vgg19(model_dirs: list[Path]) -> Path:
    """The VGG19 weights file in a ``models/vgg`` folder: ``vgg19-dcbc4e0d.pth``, else any
    ``vgg19*.pth/.safetensors``. Raises FileNotFoundError naming the file expected and where."""
    for folder in model_dirs:
        if (folder / VGG_FILE).is_file():
            return folder / VGG_FILE
        found = sorted(p for p in folder.glob("vgg19*") if p.suffix in (".pth", ".safetensors"))
        if found:
            return found[0]
    where = " or ".join(str(d) for d in model_dirs)
    raise FileNotFoundError(f"the perceptual loss needs torchvision's ImageNet VGG19 weights, {VGG_FILE} (or a "
                            f"vgg19*.safetensors with the same keys), in {where}; set perceptual_weight to 0 to "
                            "train without it")


class VGGPerceptualLoss(nn.Module):
    """Real-ESRGAN's perceptual loss (see the module docstring) on 0..1 images [B, 3, H, W].
    The network is frozen; gradients flow to the input only."""

    def __init__(self, path: Path) -> None:
        import torchvision

        super().__init__()
        path = Path(path)
        state = read_state_dict(path)[0] if path.suffix == ".safetensors" else read_pickle(path)
        if not isinstance(state, dict):
            raise ModelFileError(f"{path.name}: not a VGG19 state dict")
        features = torchvision.models.vgg19(weights=None).features[: max(VGG_LAYERS) + 1]
        wanted = {k: v for k, v in state.items() if k.startswith("features.")}
        own = {f"features.{k}" for k in features.state_dict()}
        if not own <= wanted.keys() or any(wanted[k].shape != v.shape for k, v in
                                           ((f"features.{n}", t) for n, t in features.state_dict().items())):
            raise ModelFileError(f"{path.name}: not torchvision's VGG19 weights (missing or mis-shaped "
                                 f"features.* keys, e.g. {sorted(own - wanted.keys())[:3]})")
        features.load_state_dict({k[len("features."):]: wanted[k].float() for k in own})
        for layer in features:
            if isinstance(layer, nn.ReLU):
                layer.inplace = False  # an in-place ReLU would overwrite the conv outputs tapped before it
        self.features = features.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def taps(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The features after each convolution of VGG_LAYERS, in order."""
        out, h = [], (image - self.mean) / self.std
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in VGG_LAYERS:
                out.append(h)
        return out

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            targets = self.taps(hr)
        return sum((w * F.l1_loss(a, b) for w, a, b in zip(VGG_LAYERS.values(), self.taps(sr), targets)),
                   torch.zeros((), device=sr.device))
