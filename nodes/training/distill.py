"""DistillFineTune (EcomXL stage 1): a LoRA or full fine-tune whose loss mixes distillation against
the frozen original model with the ordinary denoising loss, the weight moving from the first to the
second over training (:mod:`nodes.training.mixing`).

It is TrainLoRA's recipe with one more term: at the same noisy latent, timestep and caption the
original model (the same UNet with the LoRA switched off, no copy) predicts too, and the student is
pulled towards that prediction with weight λ(step) and towards the data with 1 − λ(step). The full
and from-scratch modes (every UNet weight trains; a single-file checkpoint is saved) are
:mod:`nodes.training.full_unet`.
"""

from __future__ import annotations

from typing import Any

import torch

from graph_runtime.context import Context, HookContext
from graph_runtime.node import Combo, Float, Node, Output, Result, String
from nodes.infra.model_manager import manager_from
from nodes.training.lora import NOT_IDENTITY, TrainLoRA, lora_settings
from nodes.training.lora_files import LoraTarget
from nodes.training.lora_recipe import LoraRecipe, snr_weights
from nodes.training.loop import TrainingNode, run_folder_for, train
from nodes.training.mixing import SCHEDULES, MixedLoss, distill_weight, mixed_loss, never_distils
from nodes.training.run_folder import safe_run_name

Tensor = torch.Tensor
WEIGHTS: tuple[str, ...] = ("lora", "full", "from_scratch")


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
        _, noisy, target, timesteps = self.noised(batch)
        student = self.predict(noisy, timesteps, batch["captions"])
        schedule, start, end = self.mix
        weight = distill_weight(step - 1, self.steps, schedule=schedule, start=start, end=end)
        original = None
        if not never_distils(*self.mix):  # λ 0 all run: plain denoising, the original's pass is wasted
            with torch.no_grad():
                original = self.original_prediction(noisy, timesteps, batch["captions"])
        self.last = mixed_loss(student, original, target, weight,
                               snr_weights(self.scheduler, timesteps, self.o.min_snr_gamma))
        return self.last.total

    def original_prediction(self, noisy: Tensor, timesteps: Tensor, captions: list[str]) -> Tensor:
        """The frozen original's output: the same UNet with the LoRA switched off."""
        self.unet.disable_adapters()
        try:
            return self.predict(noisy, timesteps, captions)
        finally:
            self.unet.enable_adapters()


class DistillFineTune(TrainingNode):
    category = "training"
    description = ("EcomXL stage 1: a LoRA or full fine-tune on a DATASET whose loss is λ·distillation against the "
                   "frozen original model + (1-λ)·the denoising loss, λ moving from distill_weight_start to "
                   "distill_weight_end over the run (schedule). weights 'full' trains every UNet weight and "
                   "'from_scratch' a freshly initialised UNet (unet_config: size overrides); both save "
                   "models/checkpoints/<run_name>.safetensors for CheckpointLoaderSimple (ckpt_name output). "
                   "Otherwise TrainLoRA: same inputs, live loss, checkpoints, interrupt and resume.")
    inputs = [*TrainLoRA.inputs,
              Combo("schedule", list(SCHEDULES), default="linear", tooltip="how λ moves from start to end"),
              Float("distill_weight_start", 1.0, min=0.0, max=1.0, step=0.01, tooltip="λ at the first step"),
              Float("distill_weight_end", 0.0, min=0.0, max=1.0, step=0.01, tooltip="λ at the last step"),
              Combo("weights", list(WEIGHTS), default="lora", tooltip="lora: a LoRA (rank, alpha, target_modules); "
                    "full: every UNet weight; from_scratch: a freshly initialised UNet (unet_config)"),
              String("unet_config", "", multiline=True, tooltip="from_scratch: a JSON object of UNet2DConditionModel "
                     "arguments overriding the MODEL's UNet config, e.g. {\"block_out_channels\": [32, 64]} "
                     "(empty: the MODEL's architecture)")]
    outputs = [Output("STRING", "lora_name", tooltip="the kohya file's name in models/loras, for LoraLoader "
                      "(weights lora; else empty)"),
               Output("LOSS_MAP", "loss"),
               Output("STRING", "ckpt_name", tooltip="the checkpoint's name in models/checkpoints, for "
                      "CheckpointLoaderSimple (weights full or from_scratch; else empty)")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        from nodes.training.full_unet import unet_overrides

        weights = widgets.get("weights")
        if weights is not None and weights != "lora" and widgets.get("train_text_encoder"):
            return f"weights {weights!r} trains the UNet only: turn train_text_encoder off (or use weights 'lora')"
        if widgets.get("unet_config") is not None:
            if weights is not None and weights != "from_scratch" and widgets["unet_config"].strip():
                return f"unet_config applies to weights 'from_scratch' only (weights is {weights!r})"
            try:
                unet_overrides(widgets["unet_config"])
            except ValueError as exc:
                return str(exc)
        return TrainLoRA.validate_inputs(ctx, **widgets)

    def run(self, ctx: Context, **inputs: Any) -> Result:
        from nodes.training.full_unet import FullDistillRecipe, unet_overrides

        if problem := self.validate_inputs(ctx, **{k: v for k, v in inputs.items() if k in WIDGET_NAMES}):
            raise ValueError(problem)
        model, clip = inputs["model"], inputs["clip"]
        if model.patches or any(clip.patches):
            raise ValueError("DistillFineTune distils from the model's own weights: connect the loader directly "
                             "(this MODEL/CLIP already carries LoRA patches)")
        mix = (inputs["schedule"], inputs["distill_weight_start"], inputs["distill_weight_end"])
        distill_weight(0, inputs["steps"], schedule=mix[0], start=mix[1], end=mix[2])  # names a bad schedule first
        settings, options = lora_settings(inputs)
        identity = {"node": "DistillFineTune", **{k: v for k, v in inputs.items() if k not in NOT_IDENTITY}}
        folder = run_folder_for(ctx, inputs["run_name"], inputs["resume_from"], identity)
        name, manager, weights = safe_run_name(inputs["run_name"]), manager_from(ctx.services), inputs["weights"]
        if weights == "lora":
            target = LoraTarget(ctx.folders.model_dirs("loras")[0], name)
            make = lambda: DistillRecipe(manager, model, clip, inputs["vae"], inputs["dataset"], options,  # noqa: E731
                                         target, mix=mix, steps=inputs["steps"])
        else:
            overrides = unet_overrides(inputs["unet_config"])
            ckpt = ctx.folders.model_dirs("checkpoints")[0] / f"{name}.safetensors"
            make = lambda: FullDistillRecipe(manager, model, clip, inputs["vae"], inputs["dataset"],  # noqa: E731
                                             options, ckpt, mix=mix, steps=inputs["steps"], weights=weights,
                                             overrides=overrides)
        result = train(ctx, make, settings, folder, description=identity)
        return Result(outputs=(result.values.get("lora_name", ""), result.loss_map,
                               result.values.get("ckpt_name", "")), ui=result.ui)


WIDGET_NAMES = frozenset(i.name for i in DistillFineTune.inputs if i.is_widget)
NODES: list[type[Node]] = [DistillFineTune]
