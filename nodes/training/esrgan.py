"""TrainESRGAN: fine-tune an UPSCALE_MODEL on a DATASET's images; the result is a .safetensors in
models/upscale_models that UpscaleModelLoader loads (its name is the node's output).

The recipe is :mod:`nodes.training.esrgan_recipe`, the losses :mod:`nodes.training.esrgan_losses`,
the loop (progress, previews, checkpoints, resume, interrupt) :mod:`nodes.training.loop`.
"""

from __future__ import annotations

from typing import Any

from graph_runtime import Combo, Float, Int, Link, Node, Output, Result, String
from graph_runtime.context import Context, HookContext
from nodes.infra.model_manager import manager_from
from nodes.training.esrgan_losses import VGG_FOLDER, find_vgg19
from nodes.training.loop import LR_SCHEDULERS, PRECISIONS, TrainSettings, resume_problem, run_folder_for, TrainingNode, train
from nodes.training.run_folder import safe_run_name

# Inputs that do not change what is trained: a run with other values resumes the same folder.
NOT_IDENTITY = frozenset({"run_name", "resume_from", "checkpoint_every", "preview_every"})


class TrainESRGAN(TrainingNode):
    category = "training"
    description = ("Fine-tune an upscale model (ESRGAN/Real-ESRGAN, loaded by Load Upscale Model) on a DATASET's images "
                   "(captions unused): LR inputs are the HR crops downsampled with bicubic, loss L1 + VGG19 perceptual "
                   "(weights from models/vgg) + U-Net discriminator GAN, Adam β (0.9, 0.99), EMA, as Real-ESRGAN. "
                   "Writes models/upscale_models/<run_name>.safetensors. Live loss, previews (bicubic | model | HR), "
                   "checkpoints, interrupt and resume.")
    inputs = [
        Link("upscale_model", "UPSCALE_MODEL"), Link("dataset", "DATASET",
                                                     tooltip="HR images; the crop size is its resolution"),
        String("run_name", "esrgan", tooltip="names the run folder and the file in models/upscale_models"),
        Int("steps", 1000, min=1, max=10_000_000, tooltip="optimizer steps"),
        Int("batch_size", 4, min=1, max=256),
        Int("gradient_accumulation", 1, min=1, max=1024),
        Float("learning_rate", 1e-4, min=0.0, max=1.0, step=1e-6, round=False,
              tooltip="of the generator and the discriminator (Real-ESRGAN: 1e-4)"),
        Combo("lr_scheduler", list(LR_SCHEDULERS), default="constant"),
        Combo("degradation", ["bicubic", "area"], default="bicubic", optional=True,
              tooltip="how LR inputs are made from the HR images: antialiased bicubic (Real-ESRGAN), or area: the "
              "mean of each scale x scale block (pictures rendered large and reduced, like ProductShots')"),
        Float("pixel_weight", 1.0, min=0.0, max=100.0, step=0.01, tooltip="L1 loss weight"),
        Float("perceptual_weight", 0.0, min=0.0, max=100.0, step=0.01,
              tooltip="VGG19 perceptual loss weight, Real-ESRGAN: 1.0 (needs models/vgg/vgg19-dcbc4e0d.pth); 0 = off"),
        Float("gan_weight", 0.1, min=0.0, max=100.0, step=0.01, tooltip="GAN loss weight; 0 = no discriminator"),
        Int("discriminator_features", 64, min=8, max=512, step=8, tooltip="U-Net discriminator width (Real-ESRGAN: 64)"),
        Float("ema_decay", 0.999, min=0.0, max=0.99999, step=0.0001, round=False,
              tooltip="EMA of the weights that is saved; 0 = save the trained weights"),
        Float("max_grad_norm", 0.0, min=0.0, max=1000.0, step=0.1, tooltip="gradient clipping; 0 = off"),
        Combo("precision", list(PRECISIONS), default="auto", tooltip="autocast on CUDA; fp32 on the CPU"),
        Int("seed", 0, min=0, max=2**63 - 1, control_after_generate=True),
        Int("checkpoint_every", 100, min=0, max=10_000_000, tooltip="steps between checkpoints (0: end and interrupt)"),
        Int("preview_every", 50, min=0, max=10_000_000, tooltip="steps between previews (0: only at the end)"),
        String("resume_from", "", tooltip="a run folder in output/training/ to continue (empty: the folder of these inputs)"),
    ]
    outputs = [Output("STRING", "model_name", tooltip="the file's name in models/upscale_models, for Load Upscale Model"),
               Output("LOSS_MAP", "loss")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        if widgets.get("run_name") is not None and not str(widgets["run_name"]).strip():
            return "run_name must not be empty"
        weight = widgets.get("perceptual_weight")
        if isinstance(weight, (int, float)) and weight > 0:
            try:
                find_vgg19(ctx.folders.model_dirs(VGG_FOLDER))
            except FileNotFoundError as exc:
                return f"perceptual_weight: {exc}"
        return resume_problem(ctx, widgets.get("resume_from"))

    def run(self, ctx: Context, **inputs: Any) -> Result:
        from nodes.training.esrgan_recipe import ESRGANOptions, ESRGANRecipe, size_problem

        model, dataset = inputs["upscale_model"], inputs["dataset"]
        options = ESRGANOptions(
            batch_size=inputs["batch_size"], learning_rate=inputs["learning_rate"], pixel_weight=inputs["pixel_weight"],
            perceptual_weight=inputs["perceptual_weight"], gan_weight=inputs["gan_weight"],
            discriminator_features=inputs["discriminator_features"], ema_decay=inputs["ema_decay"], seed=inputs["seed"],
            degradation=inputs.get("degradation") or "bicubic")
        problem = size_problem(list(dataset.buckets()), model.scale, model.info.multiple_of, options.gan_weight > 0)
        if problem:
            raise ValueError(f"dataset: {problem}")
        vgg = find_vgg19(ctx.folders.model_dirs(VGG_FOLDER)) if options.perceptual_weight > 0 else None
        settings = TrainSettings(
            steps=inputs["steps"], seed=inputs["seed"], learning_rate=inputs["learning_rate"], optimizer="Adam",
            weight_decay=0.0, betas=(0.9, 0.99), lr_scheduler=inputs["lr_scheduler"],
            gradient_accumulation=inputs["gradient_accumulation"], max_grad_norm=inputs["max_grad_norm"],
            precision=inputs["precision"], checkpoint_every=inputs["checkpoint_every"],
            preview_every=inputs["preview_every"])
        identity = {k: v for k, v in inputs.items() if k not in NOT_IDENTITY}
        folder = run_folder_for(ctx, inputs["run_name"], inputs["resume_from"], identity)
        target = ctx.folders.model_dirs("upscale_models")[0] / f"{safe_run_name(inputs['run_name'])}.safetensors"
        manager = manager_from(ctx.services)
        result = train(ctx, lambda: ESRGANRecipe(manager, model, dataset, options, vgg, target), settings, folder,
                       description={"node": "TrainESRGAN", **identity})
        return Result(outputs=(result.values["model_name"], result.loss_map), ui=result.ui)


NODES: list[type[Node]] = [TrainESRGAN]
