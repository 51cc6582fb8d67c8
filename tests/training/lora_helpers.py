"""Running TrainLoRA on the tiny zoo: inputs with short settings, a one-colour dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodes.diffusion.nodes_loaders import CheckpointLoaderSimple
from nodes.diffusion.zoo import write_captioned_dataset
from nodes.training.dataset import LoadImageCaptionDataset
from nodes.training.lora import TrainLoRA

RED = (200, 40, 40)
CAPTION = "a red square"

SHORT = dict(run_name="red", steps=40, batch_size=2, gradient_accumulation=1, learning_rate=2e-2, optimizer="AdamW",
             lr_scheduler="constant", lr_warmup_steps=0, rank=4, alpha=8.0, target_modules="to_q, to_k, to_v, to_out.0, proj_in, proj_out, ff.net.0.proj, ff.net.2",
            
             train_text_encoder=True, noise_offset=0.0, min_snr_gamma=5.0, max_grad_norm=1.0, precision="auto",
             gradient_checkpointing=False, seed=0, checkpoint_every=10, preview_every=20, sample_prompt=CAPTION,
             resume_from="")


def red_dataset(ctx: Any) -> Any:
    folder = Path(ctx.folders.directory_for("input")) / "red"
    if not folder.is_dir():
        write_captioned_dataset(folder, colour=RED, caption=CAPTION)
    return LoadImageCaptionDataset().run(ctx, folder="red", resolution=64, crop="center", flip=False,
                                         aspect_buckets=False, caption_template="{caption}", caption_dropout=0.0)[0]


def train_lora(ctx: Any, **overrides: Any) -> Any:
    model, clip, vae = CheckpointLoaderSimple().run(ctx, ckpt_name=overrides.pop("ckpt", "tiny-sd15.safetensors"))
    return TrainLoRA().run(ctx, model=model, clip=clip, vae=vae, dataset=red_dataset(ctx), **{**SHORT, **overrides})
