"""The TrainESRGAN recipe: fine-tune a spandrel-loaded upscaler (ESRGAN/RRDBNet, Rapid Diffusion's
super-resolution stage) on HR images, on the shared loop (:mod:`nodes.training.loop`).

The recipe is Real-ESRGAN's fine-tuning (``finetune_realesrgan_x4plus.yml``) with paired data:
each HR crop of the DATASET is downsampled by the model's scale with antialiased bicubic
interpolation (MATLAB's ``imresize``, which BasicSR uses, is also antialiased bicubic) to make its
LR input, or (``degradation`` "area") by averaging each scale x scale block, which is how pictures
rendered large and reduced (the demo's product shots, and so the demo model's outputs) were made. Loss = ``pixel_weight``·L1 + ``perceptual_weight``·VGG19 perceptual + ``gan_weight``·GAN
(:mod:`nodes.training.esrgan_losses`); generator and discriminator each with Adam β (0.9, 0.99) at
the same learning rate, the discriminator updated after each generator step on that step's
outputs; an EMA of the generator (diffusers' ``EMAModel``) is what is saved. The network trained
is a fp32 copy of the loaded one: the shared UPSCALE_MODEL stays as loaded.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from nodes.infra.files import save_safetensors
from nodes.infra.model_manager import ModelManager
from nodes.training.esrgan_losses import UNetDiscriminatorSN, VGGPerceptualLoss, gan_loss
from nodes.training.loop import FinalOutputs, seeded
from nodes.training.run_folder import RunFolder
from nodes.upscale.spandrel_models import UpscaleModel

DISCRIMINATOR_BETAS = (0.9, 0.99)


@dataclass(frozen=True)
class ESRGANOptions:
    batch_size: int = 4
    learning_rate: float = 1e-4
    pixel_weight: float = 1.0
    perceptual_weight: float = 1.0
    gan_weight: float = 0.1
    discriminator_features: int = 64
    ema_decay: float = 0.999
    seed: int = 0
    degradation: str = "bicubic"


DEGRADATIONS: tuple[str, ...] = ("bicubic", "area")


def downsample(hr: torch.Tensor, scale: int, degradation: str = "bicubic") -> torch.Tensor:
    """LR input of HR [B, C, H, W] 0..1 (H, W multiples of ``scale``): antialiased bicubic, clamped,
    or ("area") the mean of each ``scale`` x ``scale`` block. Raises ValueError for another name."""
    if degradation == "area":
        return F.avg_pool2d(hr, scale)
    if degradation != "bicubic":
        raise ValueError(f"degradation must be one of {DEGRADATIONS}, got {degradation!r}")
    size = (hr.shape[-2] // scale, hr.shape[-1] // scale)
    return F.interpolate(hr, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def size_problem(sizes: list[tuple[int, int]], scale: int, multiple_of: int, gan: bool) -> str | None:
    """Why HR crops of these (width, height) sizes cannot train a x``scale`` model, or None."""
    step = scale * multiple_of
    for width, height in sizes:
        if width % step or height % step:
            return (f"the dataset's {width}x{height} crops are not multiples of {step} (the model's scale {scale} "
                    f"x its input multiple {multiple_of}): choose a resolution that is")
        if gan and (width % 8 or height % 8):
            return f"the dataset's {width}x{height} crops are not multiples of 8, which the discriminator needs"
    return None


class ESRGANRecipe:
    """The loop's Recipe for one upscaler (see :mod:`nodes.training.loop`)."""

    def __init__(self, manager: ModelManager, model: UpscaleModel, dataset: Any, options: ESRGANOptions,
                 vgg_path: Path | None, target: Path) -> None:
        from diffusers.training_utils import EMAModel

        self.device, self.scale, self.options, self.dataset, self.target = manager.device, model.scale, options, dataset, target
        with manager.use(model.ref) as (module,):
            self.net = copy.deepcopy(module.net).to(self.device, torch.float32).train().requires_grad_(True)
        self.disc: UNetDiscriminatorSN | None = None
        if options.gan_weight > 0:
            with seeded(options.seed):
                self.disc = UNetDiscriminatorSN(model.info.output_channels, options.discriminator_features).to(self.device)
            self.d_optimizer = torch.optim.Adam(self.disc.parameters(), lr=options.learning_rate, betas=DISCRIMINATOR_BETAS)
        self.perceptual = VGGPerceptualLoss(vgg_path).to(self.device) if vgg_path is not None else None
        self.ema = EMAModel(self.net.parameters(), decay=options.ema_decay) if options.ema_decay > 0 else None
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (hr, sr) of this step, for the discriminator
        pixels, _ = dataset.sample(1, torch.Generator().manual_seed(options.seed))
        self.preview_hr = ((pixels + 1) / 2).clamp(0, 1).to(self.device)

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        return dict(self.net.named_parameters())

    def batch(self, step: int, micro: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pixels, _ = self.dataset.sample(self.options.batch_size, generator)
        hr = ((pixels + 1) / 2).clamp(0, 1)
        return downsample(hr, self.scale, self.options.degradation), hr

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor], step: int) -> torch.Tensor:
        lr, hr = (t.to(self.device) for t in batch)
        sr = self.net(lr)
        loss = self.options.pixel_weight * F.l1_loss(sr, hr)
        if self.perceptual is not None:
            loss = loss + self.options.perceptual_weight * self.perceptual(sr, hr)
        if self.disc is not None:
            self.disc.requires_grad_(False)  # the generator's step must not train the discriminator
            loss = loss + self.options.gan_weight * gan_loss(self.disc(sr), real=True)
            self.pending.append((hr, sr.detach().float()))  # fp32: the discriminator's step runs outside autocast
        return loss

    def after_step(self, step: int) -> None:
        if self.disc is not None and self.pending:
            self.disc.requires_grad_(True)
            self.d_optimizer.zero_grad(set_to_none=True)
            for hr, sr in self.pending:
                d_loss = gan_loss(self.disc(hr), real=True) + gan_loss(self.disc(sr), real=False)
                (d_loss / len(self.pending)).backward()
            self.d_optimizer.step()
        self.pending.clear()
        if self.ema is not None:
            self.ema.step(self.net.parameters())

    def extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.disc is not None:
            state.update(discriminator=self.disc.state_dict(), d_optimizer=self.d_optimizer.state_dict())
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.disc is not None:
            self.disc.load_state_dict(state["discriminator"])
            self.d_optimizer.load_state_dict(state["d_optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])

    def final_weights(self) -> dict[str, torch.Tensor]:
        """The generator's state dict with the EMA weights (the trained ones without EMA), on the CPU."""
        state = dict(self.net.state_dict())
        if self.ema is not None:
            names = [name for name, _ in self.net.named_parameters()]
            state.update(zip(names, self.ema.shadow_params))
        return {k: v.detach().to("cpu", torch.float32) for k, v in state.items()}

    def preview(self, step: int) -> torch.Tensor:
        """[H, 3·W, 3]: bicubic upscaling of the preview crop | the model's | the HR crop."""
        lr = downsample(self.preview_hr, self.scale, self.options.degradation)
        bicubic = F.interpolate(lr, size=self.preview_hr.shape[-2:], mode="bicubic", align_corners=False)
        was_training = self.net.training
        sr = self.net.eval()(lr)
        self.net.train(was_training)
        return torch.cat([bicubic, sr, self.preview_hr], dim=-1)[0].clamp(0, 1).permute(1, 2, 0).float().cpu()

    def save_final(self, folder: RunFolder) -> FinalOutputs:
        save_safetensors(self.final_weights(), self.target)
        return FinalOutputs({"model_name": self.target.name}, [self.target])
