"""The shape judge: a small CNN that names the product in a 32 x 32 picture (``SHAPES``).

It is trained on fresh renders of :mod:`nodes.demo.products` (every combination, held-out ones
included: the judge must know every shape in every colour), never on a model's output, so it
measures a generator without sharing its mistakes. Augmentation makes renders look like generated
pictures: random scale/shift (±15%, ±3 px), Gaussian blur (sigma 0..1.2 px), Gaussian noise (sigma
0..0.08), brightness/contrast jitter and a random permutation of the RGB channels (the shape must not
be read from the colour). Training is deterministic from the seed (CPU).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.transforms.v2.functional import gaussian_blur

from nodes.demo.products import SHAPES, all_specs, render, to_array

SIDE = 32


def network() -> nn.Sequential:
    """[N, 3, 32, 32] in -1..1 -> [N, len(SHAPES)] logits (about 36k parameters)."""
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(3, 16), *block(16, 16), nn.MaxPool2d(2), *block(16, 32), *block(32, 32),
                         nn.MaxPool2d(2), *block(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, len(SHAPES)))


class ShapeClassifier:
    """A trained ``network()`` in eval mode; ``predict`` names the shape of each image."""

    def __init__(self, net: nn.Sequential) -> None:
        self.net = net.eval()

    def logits(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``[N, H, W, 3]`` in 0..1 (any square-ish size: reduced to 32 px by area) -> ``[N, 5]``."""
        pixels = torch.as_tensor(np.asarray(images, np.float32) if not isinstance(images, torch.Tensor) else images)
        if pixels.ndim == 3:
            pixels = pixels[None]
        pixels = pixels.float().permute(0, 3, 1, 2)
        if pixels.shape[-2:] != (SIDE, SIDE):
            pixels = F.interpolate(pixels, size=(SIDE, SIDE), mode="area")
        with torch.no_grad():
            return torch.cat([self.net(chunk * 2 - 1) for chunk in pixels.split(256)])

    def predict(self, images: np.ndarray | torch.Tensor) -> list[str]:
        return [SHAPES[i] for i in self.logits(images).argmax(-1).tolist()]

    def save(self, path: str | Path) -> None:
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(path),
                  metadata={"shapes": ",".join(SHAPES)})

    @classmethod
    def load(cls, path: str | Path) -> ShapeClassifier:
        net = network()
        net.load_state_dict(load_file(str(path)))
        return cls(net)


def rendered_set(seed: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` fresh 32 px renders over every combination: ``[N, 3, 32, 32]`` in 0..1 and labels."""
    rng = random.Random(f"shape-judge:{seed}")
    specs = all_specs()
    chosen = [(specs[i % len(specs)], rng.randrange(2**31)) for i in range(count)]
    rng.shuffle(chosen)
    pixels = np.stack([to_array(render(spec, shot_seed, SIDE)) for spec, shot_seed in chosen])
    labels = torch.tensor([SHAPES.index(spec.shape) for spec, _ in chosen])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), labels


def augment(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Renders made to look generated; ``[N, 3, H, W]`` in 0..1 -> the same shape, in 0..1."""
    n = len(pixels)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, *shape, generator=generator)

    scale = uniform(0.85, 1.15)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = uniform(-0.18, 0.18, 2)  # +-3 px at 32 px
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    out = F.grid_sample(pixels, grid, padding_mode="border", align_corners=False)
    order = torch.argsort(torch.rand(n, 3, generator=generator), dim=1)
    out = torch.gather(out, 1, order[:, :, None, None].expand_as(out))
    sigma = float(uniform(0.0, 1.2)[0])
    if sigma > 0.1:  # one blur per batch: a per-image kernel costs more than it teaches
        out = gaussian_blur(out, [5, 5], [sigma, sigma])
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * uniform(0.8, 1.2, 1, 1, 1) + mean + uniform(-0.08, 0.08, 1, 1, 1)
    out = out + uniform(0.0, 0.08, 1, 1, 1) * torch.randn(out.shape, generator=generator)
    return out.clamp(0, 1)


def fit(seed: int = 0, *, count: int = 3000, steps: int = 600, batch_size: int = 64,
        learning_rate: float = 3e-3) -> ShapeClassifier:
    """Train the shape judge from ``seed``: ``count`` renders, ``steps`` AdamW steps on a one-cycle
    learning rate, on one CPU thread (the calls are too small to share, and a second thread on a
    busy machine slows them tenfold). The defaults take under a minute on a CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(seed, count, steps, batch_size, learning_rate)
    finally:
        torch.set_num_threads(threads)


def _fit(seed: int, count: int, steps: int, batch_size: int, learning_rate: float) -> ShapeClassifier:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    pixels, labels = rendered_set(seed, count)
    net = network()
    optimizer = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps)
    net.train()
    for _ in range(steps):
        index = torch.randint(0, count, (batch_size,), generator=generator)
        loss = F.cross_entropy(net(augment(pixels[index], generator) * 2 - 1), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return ShapeClassifier(net)
