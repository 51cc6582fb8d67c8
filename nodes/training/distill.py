"""DistillFineTune (EcomXL stage 1): a LoRA fine-tune whose loss mixes distillation against the
frozen original model with the ordinary denoising loss, the weight moving from the first to the
second over training (:mod:`nodes.training.mixing`).

It is TrainLoRA's recipe with one more term: at the same noisy latent, timestep and caption the
original model (the same UNet with the LoRA switched off, no copy) predicts too, and the student is
pulled towards that prediction with weight λ(step) and towards the data with 1 − λ(step).
"""

from __future__ import annotations

from typing import Any

import torch

from graph_runtime.context import Context, HookContext
from graph_runtime.node import Combo, Float, Node, Output, Result
from nodes.diffusion.denoiser import Denoiser
from nodes.diffusion.guidance import ModelExtras, NoGuidance
from nodes.infra.model_manager import manager_from
from nodes.training.lora import NOT_IDENTITY, TrainLoRA, _targets
from nodes.training.lora_files import LoraTarget
from nodes.training.lora_recipe import LoraOptions, LoraRecipe
from nodes.training.loop import TrainSettings, run_folder_for, train
from nodes.training.mixing import SCHEDULES, MixedLoss, distill_weight, mixed_loss
from nodes.training.run_folder import safe_run_name

Tensor = torch.Tensor


class DistillRecipe(LoraRecipe):
    """LoraRecipe with the mixed loss; ``mix`` is (schedule, λ start, λ end), ``steps`` the run's length."""

    def __init__(self, *args: Any, mix: tuple[str, float, float], steps: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mix, self.steps = mix, steps
        self.last: MixedLoss | None = None

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        # LoraRecipe names its adapter afresh per run; checkpoints need names stable across runs.
        return {k.replace(f".{self.adapter}.", "."): p for k, p in super().trainable().items()}

    def loss(self, batch: dict[str, Any], step: int) -> Tensor:
        from diffusers.training_utils import compute_snr

        latents = self._latents(batch["pixels"])
        noise, timesteps = batch["noise"].to(self.device), batch["timesteps"].to(self.device)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        entries = [self._conditioning(c, latents.shape[-2:]) for c in batch["captions"]]
        denoiser = Denoiser(self.unet, self.model.spec, positive=entries, negative=entries, guidance=NoGuidance(),
                            extras=ModelExtras(self.model.spec, dict(self.unet.config), 1.0, tuple(latents.shape[-2:])),
                            batch=1, steps=1)
        student = denoiser.predict(noisy, timesteps, entries, step).float()
        self.unet.disable_adapters()
        try:
            with torch.no_grad():
                original = denoiser.predict(noisy, timesteps, entries, step).float()
        finally:
            self.unet.enable_adapters()
        v_pred = self.scheduler.config.prediction_type == "v_prediction"
        target = self.scheduler.get_velocity(latents, noise, timesteps) if v_pred else noise
        weights = None
        if self.o.min_snr_gamma > 0:
            snr = compute_snr(self.scheduler, timesteps)
            weights = torch.clamp(snr, max=self.o.min_snr_gamma) / (snr + 1 if v_pred else snr)
        schedule, start, end = self.mix
        weight = distill_weight(step - 1, self.steps, schedule=schedule, start=start, end=end)
        self.last = mixed_loss(student, original, target.float(), weight, weights)
        return self.last.total


class DistillFineTune(Node):
    category = "training"
    description = ("EcomXL stage 1: a LoRA fine-tune on a DATASET whose loss is λ·distillation against the frozen "
                   "original model + (1-λ)·the denoising loss, λ moving from distill_weight_start to "
                   "distill_weight_end over the run (schedule). Otherwise TrainLoRA: same inputs, files, live loss, "
                   "checkpoints, interrupt and resume.")
    long_running = True
    inputs = [*TrainLoRA.inputs,
              Combo("schedule", list(SCHEDULES), default="linear", tooltip="how λ moves from start to end"),
              Float("distill_weight_start", 1.0, min=0.0, max=1.0, step=0.01, tooltip="λ at the first step"),
              Float("distill_weight_end", 0.0, min=0.0, max=1.0, step=0.01, tooltip="λ at the last step")]
    outputs = [Output("STRING", "lora_name", tooltip="the kohya file's name in models/loras, for LoraLoader"),
               Output("LOSS_MAP", "loss")]

    @classmethod
    def fingerprint(cls, ctx: HookContext, **widgets: Any) -> Any:
        return TrainLoRA.fingerprint(ctx, **widgets)

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        return TrainLoRA.validate_inputs(ctx, **widgets)

    def run(self, ctx: Context, **inputs: Any) -> Result:
        model, clip = inputs["model"], inputs["clip"]
        if model.patches or any(clip.patches):
            raise ValueError("DistillFineTune distils from the model's own weights: connect the loader directly "
                             "(this MODEL/CLIP already carries LoRA patches)")
        mix = (inputs["schedule"], inputs["distill_weight_start"], inputs["distill_weight_end"])
        distill_weight(0, inputs["steps"], schedule=mix[0], start=mix[1], end=mix[2])  # names a bad schedule first
        settings = TrainSettings(
            steps=inputs["steps"], seed=inputs["seed"], learning_rate=inputs["learning_rate"],
            optimizer=inputs["optimizer"], lr_scheduler=inputs["lr_scheduler"], lr_warmup_steps=inputs["lr_warmup_steps"],
            gradient_accumulation=inputs["gradient_accumulation"], max_grad_norm=inputs["max_grad_norm"],
            precision=inputs["precision"], checkpoint_every=inputs["checkpoint_every"],
            preview_every=inputs["preview_every"])
        options = LoraOptions(
            rank=inputs["rank"], alpha=inputs["alpha"], target_modules=_targets(inputs["target_modules"]),
            train_text_encoder=inputs["train_text_encoder"], batch_size=inputs["batch_size"],
            noise_offset=inputs["noise_offset"], min_snr_gamma=inputs["min_snr_gamma"],
            gradient_checkpointing=inputs["gradient_checkpointing"], sample_prompt=inputs["sample_prompt"],
            seed=inputs["seed"], precision=inputs["precision"])
        identity = {"node": "DistillFineTune", **{k: v for k, v in inputs.items() if k not in NOT_IDENTITY}}
        folder = run_folder_for(ctx, inputs["run_name"], inputs["resume_from"], identity)
        target = LoraTarget(ctx.folders.model_dirs("loras")[0], safe_run_name(inputs["run_name"]))
        manager = manager_from(ctx.services)
        result = train(ctx, lambda: DistillRecipe(manager, model, clip, inputs["vae"], inputs["dataset"], options,
                                                  target, mix=mix, steps=inputs["steps"]),
                       settings, folder, description=identity)
        return Result(outputs=(result.values["lora_name"], result.loss_map), ui=result.ui)


NODES: list[type[Node]] = [DistillFineTune]
