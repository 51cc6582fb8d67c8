"""Plain denoising training of a pixel-family model (InitPixelModel -> DistillFineTune weights
"full", distill weight 0): seconds per optimizer step, against the same run with a distillation
weight of 1e-6 (which must run the frozen original's forward pass every step, as every run did
before λ = 0 skipped it), alternating, ``--repeats`` times, in this process.

    OMP_NUM_THREADS=2 python bench/pixel_training.py            # shipped pixel UNet, batch 4 at 32x32, 8 steps
    python bench/pixel_training.py --steps 40 --batch-size 16 --repeats 5

Steps are timed between the loop's progress reports (model building and the final checkpoint are
outside) in process CPU seconds, which a machine shared with other work disturbs far less than wall
time. Reported: the median of the repeats' median step times, and their ratio (the saving is the
frozen UNet's forward pass, about a quarter of a training step's forward and backward).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def _dataset(folder: Path) -> Any:
    from PIL import Image

    from nodes.training.dataset import load_dataset

    folder.mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate([(220, 30, 30), (30, 40, 220), (30, 200, 60), (240, 200, 20)]):
        image = Image.new("RGB", (32, 32), (255, 255, 255))
        image.paste(colour, (6 + i, 8, 22 + i, 24))
        image.save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"a square number {i}")
    return load_dataset(folder, resolution=32, crop="center", flip=False, aspect_buckets=False,
                        caption_template="{caption}", caption_dropout=0.0)


def _step_seconds(base: Path, zoo: Path, dataset: Any, weight: float, args: argparse.Namespace, run: str) -> float:
    from graph_runtime.context import Context, InterruptFlag, Services
    from graph_runtime.folders import FolderPaths
    from nodes.diffusion.nodes_loaders import CheckpointLoaderSimple
    from nodes.training.distill import DistillFineTune
    from nodes.training.new_pixel_model import InitPixelModel

    stamps: list[float] = []
    folders = FolderPaths(base=base, models_roots=[base / "models", zoo])
    ctx = Context(prompt_id="bench", node_id="1", class_type="bench", folders=folders, services=Services(),
                  interrupt=InterruptFlag(), extra_data={},
                  report_progress=lambda *_: stamps.append(time.process_time()))
    _, clip, _ = CheckpointLoaderSimple().run(ctx, ckpt_name="tiny-sd15.safetensors")
    clip = dataclasses.replace(clip, family="pixel")
    model, vae = InitPixelModel().run(ctx, clip=clip, unet_config="", seed=0)
    widgets = {i.name: i.default for i in DistillFineTune.inputs if i.is_widget}
    DistillFineTune().run(ctx, **{**widgets, "model": model, "clip": clip, "vae": vae, "dataset": dataset,
                                  "weights": "full", "schedule": "constant", "distill_weight_start": weight,
                                  "distill_weight_end": weight, "steps": args.steps, "batch_size": args.batch_size,
                                  "learning_rate": 1e-4, "checkpoint_every": 0, "preview_every": 0, "run_name": run})
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return statistics.median(gaps[1:])  # the first step also warms the allocator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from nodes.diffusion.zoo import write_tiny_zoo

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        zoo = base / "zoo" / "models"
        write_tiny_zoo(zoo, seed=0)
        dataset = _dataset(base / "data")
        times: dict[str, list[float]] = {"skip": [], "with_original": []}
        for repeat in range(args.repeats):
            for name, weight in (("skip", 0.0), ("with_original", 1e-6)):
                times[name].append(_step_seconds(base, zoo, dataset, weight, args, f"{name}{repeat}"))
    skip, full = statistics.median(times["skip"]), statistics.median(times["with_original"])
    print(f"pixel UNet (configs/pixel.json), batch {args.batch_size} at 32x32, {args.steps} steps, "
          f"{torch.get_num_threads()} threads")
    print(f"  λ = 0 (original skipped): {skip * 1000:.1f} CPU ms/step")
    print(f"  λ = 1e-6 (original runs): {full * 1000:.1f} CPU ms/step")
    print(f"  ratio skip / with original: {skip / full:.2f}")


if __name__ == "__main__":
    main()
