"""The LoRA recipe TrainLoRA runs on the shared loop: peft LoRA on the UNet (and optionally the text
encoders), the denoising loss of diffusers' ``train_text_to_image_lora`` script.

Per step: the batch's VAE latents (the latent distribution's mean, as VAEEncode; encoded once per
image and kept when the dataset has no random crop or flip, else encoded every step), noise at
uniform random timesteps (``noise_offset`` adds per-channel offset noise, Guttenberg 2023), one
direct UNet call (SDXL size conditioning and pooled text as the sampler passes them), and the MSE
against the noise (epsilon models) or the velocity (v-prediction), weighted by min-SNR-γ (Hang et
al. 2023, ``diffusers.training_utils.compute_snr``) when ``min_snr_gamma`` > 0.

The trainable UNet and text encoders are the model manager's trainable copies (never the shared
inference modules); the adapter is added under a per-run name and deleted on close.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, replace
from typing import Any

import torch

from nodes.diffusion import vae_ops
from nodes.diffusion.models import ClipModel, DiffusionModel, VaeModel
from nodes.diffusion.sampling import SampleSettings, sample
from nodes.infra.model_manager import ModelManager
from nodes.training import students
from nodes.training.dataset import ImageCaptionDataset
from nodes.training.loop import FinalOutputs, autocast_dtype, seeded
from nodes.training.lora_files import LoraTarget, save_lora
from nodes.training.run_folder import RunFolder

TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
PREVIEW_STEPS = 12


@dataclass(frozen=True)
class LoraOptions:
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    train_text_encoder: bool
    batch_size: int
    noise_offset: float
    min_snr_gamma: float
    gradient_checkpointing: bool
    sample_prompt: str
    seed: int
    precision: str

    @property
    def effective_alpha(self) -> float:
        """Alpha 0 means alpha = rank, as kohya reads it (a LoRA scaled by 0 would train nothing)."""
        return self.alpha or float(self.rank)


class LoraRecipe:
    """See the module docstring. ``target``: where save_final writes (models/loras, names)."""

    def __init__(self, manager: ModelManager, model: DiffusionModel, clip: ClipModel, vae: VaeModel,
                 dataset: ImageCaptionDataset, options: LoraOptions, target: LoraTarget) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        self._init_data(manager, model, vae, dataset, options)
        self.target = target
        amp = autocast_dtype(options.precision, self.device)
        # Frozen base weights in the autocast dtype, LoRA weights fp32 (diffusers' cast_training_params).
        policy = {"trainable": True, "compile": False, "dtype": amp or torch.float32}
        self.model = replace(model, ref=model.ref.with_policy(**policy))
        self.clip = replace(clip, refs=tuple(r.with_policy(**policy) for r in clip.refs)) \
            if options.train_text_encoder else clip
        self.adapter = f"train_{uuid.uuid4().hex[:8]}"
        self._stack = contextlib.ExitStack()
        modules = self._stack.enter_context(manager.use(self.model.ref, *self.clip.refs))
        self.unet, self.encoders = modules[0], modules[1:] if options.train_text_encoder else []
        self.unet_config = LoraConfig(r=options.rank, lora_alpha=options.effective_alpha, init_lora_weights="gaussian",
                                      target_modules=list(options.target_modules))
        self.te_config = LoraConfig(r=options.rank, lora_alpha=options.effective_alpha, init_lora_weights="gaussian",
                                    target_modules=list(TEXT_ENCODER_TARGETS))
        with seeded(options.seed):  # the LoRA's start depends on the seed only
            for module, config in [(self.unet, self.unet_config), *((e, self.te_config) for e in self.encoders)]:
                module.requires_grad_(False)
                if module is self.unet:
                    self._add_unet_adapter(config)
                else:  # transformers' own add_adapter asks for a newer peft than the pinned one
                    inject_adapter_in_model(config, module, adapter_name=self.adapter)
                for param in module.parameters():
                    if param.requires_grad:
                        param.data = param.data.float()
        if options.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.dtype = next(p for p in self.unet.parameters() if not p.requires_grad).dtype

    def _init_data(self, manager: ModelManager, model: DiffusionModel, vae: VaeModel, dataset: ImageCaptionDataset,
                   options: LoraOptions) -> None:
        """What every denoising recipe needs besides its student: data, latents, noise schedule."""
        from diffusers import DDPMScheduler

        self.manager, self.vae, self.dataset, self.o = manager, vae, dataset, options
        self.device = manager.device
        self.scheduler = DDPMScheduler.from_config(model.scheduler_config)
        self._texts: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._latent_cache: dict[int, torch.Tensor] | None = {} if dataset.fixed_pixels else None

    def _add_unet_adapter(self, config: Any) -> None:
        """ValueError naming ``target_modules`` when it matches no UNet module; the models are
        released first, since the loop never closes a recipe that failed to build."""
        from peft.utils.error import NoMatchingPeftModuleError

        try:
            self.unet.add_adapter(config, adapter_name=self.adapter)
        except NoMatchingPeftModuleError as exc:
            self._stack.close()
            raise ValueError(f"target_modules {', '.join(self.o.target_modules)!r} matches no module of this UNet "
                             f"(e.g. to_q, to_k, to_v, to_out.0, proj_in, proj_out, ff.net.0.proj, ff.net.2)") from exc

    def close(self) -> None:
        if self.o.gradient_checkpointing:
            self.unet.disable_gradient_checkpointing()
        self.unet.delete_adapters([self.adapter])
        from peft.tuners.tuners_utils import BaseTunerLayer

        for encoder in self.encoders:
            for layer in encoder.modules():
                if isinstance(layer, BaseTunerLayer) and self.adapter in layer.lora_A:
                    layer.delete_adapter(self.adapter)
        self._stack.close()

    # -- the Recipe protocol ---------------------------------------------------------------------

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        """LoRA parameters by name, without the per-run adapter name (checkpoints outlive it)."""
        parts = [("unet", self.unet), *((f"text_encoder{i or ''}", e) for i, e in enumerate(self.encoders))]
        return {f"{part}.{n.replace(f'.{self.adapter}.', '.')}": p for part, module in parts
                for n, p in module.named_parameters() if p.requires_grad}

    def batch(self, step: int, micro: int, generator: torch.Generator) -> dict[str, Any]:
        cached = self._latent_cache is not None
        items, pixels, captions = self.dataset.sample_indexed(self.o.batch_size, generator, pixels=not cached)
        width, height = self.dataset.items[items[0]].bucket
        b = len(items)
        latent_shape = (b, self.vae.latent_channels, height // self.vae.downscale, width // self.vae.downscale)
        noise = torch.randn(latent_shape, generator=generator)
        if self.o.noise_offset:
            noise = noise + self.o.noise_offset * torch.randn((b, latent_shape[1], 1, 1), generator=generator)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), generator=generator)
        return {"items": items, "pixels": pixels, "captions": captions, "noise": noise, "timesteps": timesteps}

    def loss(self, batch: dict[str, Any], step: int) -> torch.Tensor:
        latents, noisy, target, timesteps = self.noised(batch)
        prediction = self.predict(noisy, timesteps, batch["captions"])
        return denoising_loss(self.scheduler, prediction, target, timesteps, self.o.min_snr_gamma).mean()

    def noised(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(clean latents, noisy latents, denoising target (ε or v), timesteps) of ``batch``."""
        latents = self._batch_latents(batch)
        noise, timesteps = batch["noise"].to(self.device), batch["timesteps"].to(self.device)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        v_pred = self.scheduler.config.prediction_type == "v_prediction"
        target = self.scheduler.get_velocity(latents, noise, timesteps) if v_pred else noise
        return latents, noisy, target.float(), timesteps

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, captions: list[str],
                unet: torch.nn.Module | None = None) -> torch.Tensor:
        """The fp32 output of ``unet`` (default: the one trained) for ``noisy`` at ``timesteps``, one
        caption per row: called directly (the sampler's Denoiser adds guidance, hooks and areas a
        training step has none of)."""
        unet = self.unet if unet is None else unet
        entries = [self._conditioning(c, None) for c in captions]
        like = noisy.to(next(unet.parameters()).dtype if unet is not self.unet else self.dtype)
        text = students.text_batch(entries, self.model, dict(unet.config), tuple(noisy.shape[-2:]), like)
        cond = students.guidance_embedding(unet, torch.ones(noisy.shape[0]), like)
        return students.call_unet(unet, like, timesteps, text, cond).float()

    def preview(self, step: int) -> torch.Tensor | None:
        if not self.o.sample_prompt.strip():
            return None
        width, height = self.dataset.items[0].bucket
        positive, negative = [self._conditioning(self.o.sample_prompt, None, grad=False)], \
            [self._conditioning("", None, grad=False)]
        latent = {"samples": torch.zeros(self.model.spec.latent_shape(1, height, width))}
        settings = SampleSettings(seed=self.o.seed, steps=PREVIEW_STEPS, cfg=5.0, sampler_name="euler", scheduler="normal")
        out = sample(self.manager, self.model, positive, negative, latent, settings)
        return vae_ops.decode(self.manager, self.vae, out["samples"])[0]

    def save_final(self, folder: RunFolder) -> FinalOutputs:
        from peft.utils import get_peft_model_state_dict

        unet = get_peft_model_state_dict(self.unet, adapter_name=self.adapter)
        encoders = [get_peft_model_state_dict(e, adapter_name=self.adapter) for e in self.encoders]
        return save_lora(self.target, self.model.family, unet, encoders, self.unet_config, self.te_config)

    # -- helpers ---------------------------------------------------------------------------------

    def _batch_latents(self, batch: dict[str, Any]) -> torch.Tensor:
        """Scaled VAE latents (the distribution's mean) of the batch. With fixed pixels (no random
        crop or flip) each item is encoded once and kept, as diffusers' SDXL scripts precompute
        their latents; otherwise every step encodes its crops."""
        if self._latent_cache is None:
            return self._encode(batch["pixels"])
        missing = sorted({i for i in batch["items"] if i not in self._latent_cache})
        for index in missing:
            self._latent_cache[index] = self._encode(self.dataset.item_pixels(index)[None])[0]
        return torch.stack([self._latent_cache[i] for i in batch["items"]])

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        with self.vae.use(self.manager) as vae, torch.no_grad():
            x = pixels.to(*vae_ops.placement(vae, self.manager))
            mean = vae.encode(x, return_dict=False)[0].mode().float()
        return (mean - self.vae.shift_factor) * self.vae.scaling_factor

    def _conditioning(self, caption: str, latent_hw: Any, *, grad: bool = True) -> list[Any]:
        """ComfyUI's conditioning entry for ``caption`` (cached while the text encoders are frozen)."""
        trains = bool(self.encoders) and grad
        if trains or caption not in self._texts:
            with contextlib.nullcontext() if trains else torch.no_grad():
                embeds, pooled = self.clip.encode(self.manager, caption)
            if trains:
                return [embeds.to(self.device), {"pooled_output": pooled}]
            self._texts[caption] = (embeds, pooled)
        embeds, pooled = self._texts[caption]
        return [embeds.to(self.device), {"pooled_output": pooled}]


def denoising_loss(scheduler: Any, prediction: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor,
                   min_snr_gamma: float) -> torch.Tensor:
    """``[B]`` per-sample MSE of ``prediction`` against ``target`` ([B, C, h, w]), weighted by
    min-SNR-γ (Hang et al. 2023; ``diffusers.training_utils.compute_snr``) when ``min_snr_gamma`` > 0."""
    per_sample = torch.nn.functional.mse_loss(prediction, target, reduction="none").mean(dim=(1, 2, 3))
    weights = snr_weights(scheduler, timesteps, min_snr_gamma)
    return per_sample if weights is None else per_sample * weights


def snr_weights(scheduler: Any, timesteps: torch.Tensor, min_snr_gamma: float) -> torch.Tensor | None:
    """min-SNR-γ weights ``[B]`` (``min(SNR, γ)/SNR``, ``/(SNR+1)`` for v-prediction), or None when off."""
    from diffusers.training_utils import compute_snr

    if min_snr_gamma <= 0:
        return None
    snr = compute_snr(scheduler, timesteps)
    v_pred = scheduler.config.prediction_type == "v_prediction"
    return torch.clamp(snr, max=min_snr_gamma) / (snr + 1 if v_pred else snr)
