"""TrainLoRA: train a LoRA for an SD1.x/SDXL model on a DATASET, inside the graph.

The recipe is :mod:`nodes.training.lora_recipe`, the loop (progress, previews, checkpoints,
resume, interrupt) :mod:`nodes.training.loop`, the files :mod:`nodes.training.lora_files`. The
``lora_name`` output feeds LoraLoader's ``lora_name`` directly, so a graph trains, then samples
with what it trained.
"""

from __future__ import annotations

from typing import Any

from graph_runtime import Boolean, Combo, Float, Int, Link, Node, Output, Result, String
from graph_runtime.context import Context, HookContext
from nodes.infra.model_manager import manager_from
from nodes.training.loop import (
    LR_SCHEDULERS, OPTIMIZERS, PRECISIONS, TrainSettings, resume_problem, run_folder_for, TrainingNode, train,
    warmup_problem,
)
from nodes.training.lora_files import LoraTarget
from nodes.training.run_folder import safe_run_name

DEFAULT_TARGETS = "to_q, to_k, to_v, to_out.0"
# Inputs that do not change what is trained: a run with other values resumes the same folder.
NOT_IDENTITY = frozenset({"run_name", "resume_from", "checkpoint_every", "preview_every", "sample_prompt"})


class TrainLoRA(TrainingNode):
    category = "training"
    description = ("Train a LoRA (peft) on the UNet attention of an SD1.x/SDXL model, optionally also on the text "
                   "encoder(s), from a DATASET. Live loss, previews, checkpoints every N steps in "
                   "output/training/<run_name>-<hash>/, interrupt and resume (same inputs, or resume_from). Writes "
                   "models/loras/<run_name>.safetensors (kohya, with alpha) and <run_name>_diffusers/ (diffusers).")
    inputs = [
        Link("model", "MODEL"), Link("clip", "CLIP"), Link("vae", "VAE"), Link("dataset", "DATASET"),
        String("run_name", "lora", tooltip="names the run folder and the LoRA files in models/loras"),
        Int("steps", 500, min=1, max=1_000_000, tooltip="optimizer steps"),
        Int("batch_size", 1, min=1, max=256),
        Int("gradient_accumulation", 1, min=1, max=1024, tooltip="micro-batches summed per optimizer step"),
        Float("learning_rate", 1e-4, min=0.0, max=1.0, step=1e-6, round=False),
        Combo("optimizer", list(OPTIMIZERS), default="AdamW"),
        Combo("lr_scheduler", list(LR_SCHEDULERS), default="constant"),
        Int("lr_warmup_steps", 0, min=0, max=1_000_000),
        Int("rank", 16, min=1, max=1024), Float("alpha", 16.0, min=0.0, max=4096.0, step=0.5,
                                                        tooltip="LoRA scale is alpha/rank; 0 = rank, as kohya reads it"),
        String("target_modules", DEFAULT_TARGETS, tooltip="UNet module names (peft target_modules), comma-separated"),
        Boolean("train_text_encoder", False, tooltip="also a LoRA on the text encoder(s) (q/k/v/out projections): "
                "adapts the text encoder to the dataset's own entities"),
        Float("noise_offset", 0.0, min=0.0, max=1.0, step=0.01),
        Float("min_snr_gamma", 0.0, min=0.0, max=100.0, step=0.5, tooltip="min-SNR-γ loss weighting; 0 = off, 5 "
              "is the paper's value"),
        Float("max_grad_norm", 1.0, min=0.0, max=1000.0, step=0.1, tooltip="gradient clipping; 0 = off"),
        Combo("precision", list(PRECISIONS), default="auto", tooltip="autocast on CUDA (auto: bf16 where "
              "supported); the CPU always trains in fp32"),
        Boolean("gradient_checkpointing", False),
        Int("seed", 0, min=0, max=2**63 - 1, control_after_generate=True),
        Int("checkpoint_every", 100, min=0, max=1_000_000, tooltip="steps between checkpoints (0: only at the end "
            "and on interrupt)"),
        Int("preview_every", 50, min=0, max=1_000_000, tooltip="steps between preview images (0: only at the end)"),
        String("sample_prompt", "", multiline=True, tooltip="the preview image's prompt (empty: loss curve only)"),
        String("resume_from", "", tooltip="a run folder in output/training/ to continue (empty: the folder of these "
               "inputs)"),
    ]
    outputs = [Output("STRING", "lora_name", tooltip="the kohya file's name in models/loras, for LoraLoader"),
               Output("LOSS_MAP", "loss")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        targets = widgets.get("target_modules")
        if targets is not None and not _targets(targets):
            return "target_modules names no module (e.g. 'to_q, to_k, to_v, to_out.0')"
        if widgets.get("run_name") is not None and not str(widgets["run_name"]).strip():
            return "run_name must not be empty"
        if (problem := warmup_problem(widgets.get("lr_scheduler"), widgets.get("lr_warmup_steps"))) is not None:
            return problem
        return resume_problem(ctx, widgets.get("resume_from"))

    def run(self, ctx: Context, **inputs: Any) -> Result:
        from nodes.training.lora_recipe import LoraRecipe

        model, clip = inputs["model"], inputs["clip"]
        if model.patches or any(clip.patches):
            raise ValueError("TrainLoRA trains on the model's own weights: connect the loader directly, and apply "
                             "other LoRAs after training (this MODEL/CLIP already carries LoRA patches)")
        settings, options = lora_settings(inputs)
        identity = {k: v for k, v in inputs.items() if k not in NOT_IDENTITY}
        folder = run_folder_for(ctx, inputs["run_name"], inputs["resume_from"], identity)
        target = LoraTarget(ctx.folders.model_dirs("loras")[0], safe_run_name(inputs["run_name"]))
        manager = manager_from(ctx.services)
        result = train(ctx, lambda: LoraRecipe(manager, model, clip, inputs["vae"], inputs["dataset"], options, target),
                       settings, folder, description={"node": "TrainLoRA", **identity})
        return Result(outputs=(result.values["lora_name"], result.loss_map), ui=result.ui)



def lora_settings(inputs: dict[str, Any]) -> tuple[TrainSettings, Any]:
    """TrainLoRA's inputs (DistillFineTune has them too) as the loop's ``TrainSettings`` and the
    recipe's ``LoraOptions``."""
    from nodes.training.lora_recipe import LoraOptions

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
    return settings, options


def _targets(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


NODES: list[type[Node]] = [TrainLoRA]
