"""What the distillation recipes share: the student UNet and its LoRA, text conditioning, UNet calls
and a few-step preview.

The student is a private copy of the MODEL's UNet taken with the MODEL's LoRA patches applied, so
the teacher is exactly what the graph samples, and nothing the optimizer does reaches the shared
module in the model manager (or outlives the run in its cache).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch

from nodes.diffusion.guidance import ModelExtras
from nodes.diffusion.models import ClipModel, Conditioning, DiffusionModel
from nodes.infra.model_manager import ModelManager

Tensor = torch.Tensor
# The modules diffusers' consistency-distillation LoRA scripts adapt (the published LCM/SLAM LoRAs).
DISTILLATION_TARGETS: tuple[str, ...] = (
    "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2",
    "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")
ADAPTER = "default"


def student_copy(model: DiffusionModel, manager: ModelManager, *, full: bool) -> torch.nn.Module:
    """A private copy of ``model``'s UNet with its patches baked in, on the manager's device.
    ``full``: every weight trains, in fp32; otherwise all are frozen (a LoRA is added later)."""
    with model.use(manager) as unet:
        student = copy.deepcopy(unet)
    student.requires_grad_(full)
    if full:
        student.float()
    student.train()
    return student


def add_lora(unet: torch.nn.Module, rank: int, alpha: float, targets: tuple[str, ...] = DISTILLATION_TARGETS) -> None:
    """A peft LoRA (``lora_B`` zero: the student starts as the teacher) on every module of
    ``unet`` whose name ends with one of ``targets``; its parameters are fp32 even when the UNet
    is not. Raises ValueError when no module matches."""
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    names = [n for n, m in unet.named_modules() if n.endswith(targets) and isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    if not names:
        raise ValueError(f"no UNet module matches the LoRA targets {list(targets)}")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=names, init_lora_weights=True), ADAPTER)
    cast_training_params(unet, dtype=torch.float32)


def lora_parameters(unet: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in unet.named_parameters() if "lora_" in n and p.requires_grad}


@dataclass(frozen=True)
class TextBatch:
    """One UNet call's text inputs: ``context`` [B, T, D] and SDXL's ``added`` cond or None."""

    context: Tensor
    added: dict[str, Tensor] | None


def encode_prompts(clip: ClipModel, manager: ModelManager, prompts: list[str]) -> list[list[Any]]:
    """One conditioning entry ``[embeds [1, 77k, D], {"pooled_output"}]`` per prompt."""
    entries = []
    for text in prompts:
        embeds, pooled = clip.encode(manager, text)
        entries.append([embeds, {"pooled_output": pooled}])
    return entries


def text_batch(entries: list[list[Any]], model: DiffusionModel, unet_config: dict[str, Any],
               latent_hw: tuple[int, int], like: Tensor) -> TextBatch:
    """The batch of ``entries`` (one per row). Prompts of different lengths share one batch by
    repeating each context along the tokens (cross-attention is unchanged), as the denoiser does."""
    target = math.lcm(*(e[0].shape[1] for e in entries))
    context = torch.cat([e[0].repeat(1, target // e[0].shape[1], 1) for e in entries]).to(like)
    extras = ModelExtras(model.spec, unet_config, 1.0, latent_hw)
    return TextBatch(context, extras.added_cond(entries, 1, like.dtype, like.device))


def call_unet(unet: torch.nn.Module, x: Tensor, t: Tensor, text: TextBatch, timestep_cond: Tensor | None = None) -> Tensor:
    kwargs: dict[str, Any] = {"encoder_hidden_states": text.context, "added_cond_kwargs": text.added}
    if timestep_cond is not None:
        kwargs["timestep_cond"] = timestep_cond
    return unet(x, t.to(x.device), **kwargs, return_dict=False)[0]


def student_preview(unet: torch.nn.Module, model: DiffusionModel, positive: Conditioning, shape: tuple[int, ...],
                    *, steps: int = 4, seed: int = 0, scheduler: Any = None) -> Tensor:
    """[h, w, 3] float 0..1: ``unet``'s ``steps``-step sample (cfg 1) of the first prompt, shown
    with the family's latent→RGB factors. ``scheduler``: a diffusers scheduler; default
    LCMScheduler (trailing spacing), as SLAMSampler samples."""
    from nodes.diffusion.preview import latent_to_rgb
    from nodes.training.consistency import lcm_scheduler

    device = next(unet.parameters()).device
    frozen = [p for p in unet.parameters() if not p.requires_grad]
    dtype = (frozen or list(unet.parameters()))[0].dtype
    if scheduler is None:
        scheduler = lcm_scheduler(model.scheduler_config, timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=gen) * scheduler.init_noise_sigma).to(device, dtype)
    text = text_batch(positive[:1], model, dict(unet.config), tuple(shape[-2:]), x)
    cond = guidance_embedding(unet, torch.ones(shape[0]), x)
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = call_unet(unet, scheduler.scale_model_input(x, t), t.reshape(1), text, cond)
            x = scheduler.step(out, t, x, generator=gen).prev_sample
    return latent_to_rgb(x[0], model.family).float() / 255.0


def guidance_embedding(unet: torch.nn.Module, scales: Tensor, like: Tensor) -> Tensor | None:
    """``timestep_cond`` for a UNet with ``time_cond_proj_dim`` (LCM's embedding of ``scale - 1``,
    as SLAMSampler feeds it), else None."""
    from nodes.diffusion.guidance import guidance_scale_embedding

    dim = unet.config.get("time_cond_proj_dim")
    if dim is None:
        return None
    return guidance_scale_embedding(scales - 1.0, int(dim)).to(like)


class GammaInput(torch.nn.Module):
    """SLAM's γ input for a student UNet, used in training only.

    SLAM (arXiv 2404.13903; its script ``train_splam_distill_sd_wds.py``) tells the student where on
    the sub-path its input lies: the sinusoidal embedding of ``10 − 10·γ`` enters the UNet's time
    embedding (there through ``timestep_cond``, a full model with ``time_cond_proj_dim``). A LoRA
    student has no such input, so this adds one: a linear projection (zero at start) of
    ``embed(10 − 10·γ) − embed(0)`` added to the time embedding's input, by a forward pre-hook on
    ``unet.time_embedding``. At γ = 1 (LCM's point, and every inference step) the term is exactly
    zero, so the saved LoRA alone reproduces the trained student at inference and the projection
    is not saved. ``set(gamma)`` ([B] in [0, 1]) arms it for the next calls, ``set(None)`` disarms.
    """

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        time = unet.time_embedding
        self.dim = int(time.linear_1.in_features)
        self.proj = torch.nn.Linear(self.dim, self.dim, bias=False)
        torch.nn.init.zeros_(self.proj.weight)
        self.proj.to(next(unet.parameters()).device)
        self.current: Tensor | None = None
        self.handle = time.register_forward_pre_hook(self._add)

    def set(self, gamma: Tensor | None) -> None:
        from nodes.diffusion.guidance import guidance_scale_embedding

        if gamma is None:
            self.current = None
            return
        gamma = gamma.float().cpu().reshape(-1)
        self.current = (guidance_scale_embedding(10 - 10 * gamma, self.dim)
                        - guidance_scale_embedding(torch.zeros_like(gamma), self.dim))

    def _add(self, module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if self.current is None:
            return None
        sample = args[0]
        extra = self.proj(self.current.to(self.proj.weight.device, self.proj.weight.dtype))
        return (sample + extra.to(sample.dtype), *args[1:])

