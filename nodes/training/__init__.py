"""Training as long-running nodes: LoRA, SLAM distillation, EcomXL fine-tune and fusion, ESRGAN, CLIP.

Every recipe runs on the shared loop in :mod:`nodes.training.loop` (progress, previews,
checkpoints, resume, interrupt) and keeps its files in a run folder (:mod:`nodes.training.run_folder`).
"""

from __future__ import annotations

from graph_runtime import Node, hookimpl
from nodes import collect_nodes

MODULES: tuple[str, ...] = ("dataset", "lora", "slam", "distill", "merge", "checkpoint_save", "esrgan",
                             "new_upscale_model", "clip_train", "new_pixel_model")


@hookimpl
def nodeloom_register_nodes() -> list[type[Node]]:
    return collect_nodes(__name__, MODULES)


@hookimpl
def nodeloom_register_types() -> dict[str, str]:
    return {"DATASET": "images with captions to train on (LoadImageCaptionDataset)",
            "LOSS_MAP": "the loss per training step, {'loss': [float, ...]} (ComfyUI's TrainLoraNode output)"}
