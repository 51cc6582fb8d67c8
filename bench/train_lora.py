"""TrainLoRA's time per optimizer step against a plain diffusers + peft loop doing the same work on
the same tiny model and batch (noise, UNet LoRA forward and backward, clipping, AdamW, constant
lr), in two settings, each measured ``--repeats`` times, alternating, in this process:

- ``encode``: the VAE encodes the batch every step (TrainLoRA with random crops; the plain loop as
  diffusers' ``train_text_to_image_lora`` script);
- ``cached``: the latents are encoded once (TrainLoRA without random crop or flip; the plain loop
  precomputes them, as diffusers' SDXL LoRA script does).

    OMP_NUM_THREADS=1 python bench/train_lora.py          # tiny zoo SD1.5, batch 2 at 64x64, 60 steps
    python bench/train_lora.py --steps 200 --batch-size 4 --repeats 5

TrainLoRA's steps are timed between its progress reports after its first and before its last step
(model loading, the preview and checkpoint the last step makes and the LoRA files are outside, as
the plain loop has none); its loop also pays for data sampling,
progress text and the interrupt check. Reported: the median of the repeats and the best (the
least disturbed by other work on a shared machine), each as a ratio. Target: ratio <= 1.05.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

CAPTION = "a red square"


def plain_loop(root: Path, pixels: torch.Tensor, steps: int, rank: int, lr: float, cached: bool) -> float:
    """Seconds per step of diffusers' train_text_to_image_lora loop, reduced to its core
    (``cached``: the latents encoded once before the loop)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig
    from transformers import CLIPTextModel

    folder = root / "diffusers" / "tiny-sd15"
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    vae = AutoencoderKL.from_pretrained(folder / "vae")
    encoder = CLIPTextModel.from_pretrained(folder / "text_encoder")
    scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
    for module in (unet, vae, encoder):
        module.requires_grad_(False)
    unet.train()  # as the script (and TrainLoRA) trains
    torch.manual_seed(0)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    ids = torch.full((1, 77), encoder.config.eos_token_id)
    with torch.no_grad():
        text = encoder(ids)[0].repeat(pixels.shape[0], 1, 1)
    started = 0.0
    with torch.no_grad():
        precomputed = vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor
    for step in range(steps + 1):
        if step == 1:  # the first step warms up, as TrainLoRA's first report comes after its first
            started = time.perf_counter()
        if cached:
            latents = precomputed
        else:
            with torch.no_grad():
                latents = vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],))
        noisy = scheduler.add_noise(latents, noise, timesteps)
        prediction = unet(noisy, timesteps, text, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(prediction.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - started) / steps


def ours(root: Path, base: Path, steps: int, batch_size: int, rank: int, lr: float, cached: bool) -> float:
    from graph_runtime.context import Context, InterruptFlag, Services
    from graph_runtime.folders import FolderPaths
    from nodes.diffusion.nodes_loaders import CheckpointLoaderSimple
    from nodes.diffusion.zoo import write_captioned_dataset
    from nodes.training.dataset import LoadImageCaptionDataset
    from nodes.training.lora import TrainLoRA

    folders = FolderPaths(base=base, models_roots=[base / "models", root])
    write_captioned_dataset(folders.directory_for("input") / "bench", caption=CAPTION)
    reports: list[tuple[float, float]] = []
    ctx = Context(prompt_id="bench", node_id="1", class_type="TrainLoRA", folders=folders, services=Services(),
                  interrupt=InterruptFlag(), extra_data={},
                  report_progress=lambda node, value, maximum, preview, text: reports.append((value, time.perf_counter())))
    model, clip, vae = CheckpointLoaderSimple().run(ctx, ckpt_name="tiny-sd15.safetensors")
    dataset = LoadImageCaptionDataset().run(ctx, folder="bench", resolution=64, crop="center" if cached else "random", flip=False,
                                            aspect_buckets=False, caption_template="{caption}", caption_dropout=0.0)[0]
    TrainLoRA().run(ctx, model=model, clip=clip, vae=vae, dataset=dataset, run_name="bench", steps=steps + 2,
                    batch_size=batch_size, gradient_accumulation=1, learning_rate=lr, optimizer="AdamW",
                    lr_scheduler="constant", lr_warmup_steps=0, rank=rank, alpha=float(rank),
                    target_modules="to_q, to_k, to_v, to_out.0", train_text_encoder=False, noise_offset=0.0,
                    min_snr_gamma=0.0, max_grad_norm=1.0, precision="auto", gradient_checkpointing=False, seed=0,
                    checkpoint_every=0, preview_every=0, sample_prompt="", resume_from="")
    times = dict(reports)  # step -> when its report came; the last step's includes the final preview and checkpoint
    return (times[steps + 1] - times[1]) / steps


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--root", type=Path, default=None, help="models root holding the tiny zoo")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from nodes.diffusion.zoo import tiny_zoo_at

    root = tiny_zoo_at(args.root)
    pixels = torch.rand(args.batch_size, 3, 64, 64) * 2 - 1
    for cached in (False, True):
        node, plain = [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as base:
                node.append(ours(root, Path(base), args.steps, args.batch_size, args.rank, 1e-4, cached))
            plain.append(plain_loop(root, pixels, args.steps, args.rank, 1e-4, cached))
        setting = "cached" if cached else "encode"
        print(f"[{setting}] TrainLoRA           {statistics.median(node) * 1000:8.2f} ms/step  "
              f"({', '.join(f'{t * 1000:.1f}' for t in node)})")
        print(f"[{setting}] diffusers+peft loop {statistics.median(plain) * 1000:8.2f} ms/step  "
              f"({', '.join(f'{t * 1000:.1f}' for t in plain)})")
        print(f"[{setting}] ratio {statistics.median(node) / statistics.median(plain):.3f} of the medians, "
              f"{min(node) / min(plain):.3f} of the best (target <= 1.05)")
    print(f"{args.steps} steps, batch {args.batch_size} at 64x64, rank {args.rank}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
