"""The tiny model zoo: small random-weight models with real architectures and real file formats.

No weights can be downloaded where NodeLoom is tested, so ``nodeloom models tiny`` writes,
deterministically from a seed, everything the node families need into a models root:

    checkpoints/tiny-sd15.safetensors, tiny-sdxl.safetensors   single files, original key layout
    diffusers/tiny-sd15/, diffusers/tiny-sdxl/                 the same weights as diffusers folders
    vae/tiny-vae.safetensors                                   an SD-layout VAE (other weights)
    loras/tiny-sd15-kohya.safetensors, tiny-sd15-diffusers.safetensors
    clip_tokenizer/tiny-clip/                                  the small BPE vocabulary they share
    controlnet/tiny-controlnet-sd15.safetensors, upscale_models/tiny-esrgan-x4.safetensors,
    sams/tiny-sam.safetensors, scorers/tiny-clip-scorer/, clip_vision/tiny-clip-vision.safetensors

Single files carry their architecture in the ``nodeloom_config`` metadata entry, so loading needs
no guessing; each file is at most a few MB and the whole zoo takes seconds. ``full_size`` writes
published-size random-weight single files (no metadata, like downloaded ones) for slow tests and
``bench/load.py``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from nodes.diffusion.zoo.clip import save_clip_scorer, save_clip_vision
from nodes.diffusion.zoo.controlnet import save_controlnet
from nodes.diffusion.zoo.lora import save_loras
from nodes.diffusion.zoo.sam import TINY_SAM, build_sam, save_sam
from nodes.diffusion.zoo.sd import save_family, save_vae, tiny_sd15, tiny_sdxl
from nodes.diffusion.zoo.upscale import save_esrgan
from nodes.infra.tokenizer import TINY_TOKENIZER, write_tokenizer

__all__ = ["TINY_SAM", "build_sam", "main", "write_example_inputs", "write_tiny_zoo"]


def write_tiny_zoo(root: Path, *, seed: int = 0) -> list[Path]:
    """Write the whole zoo under ``root`` (a models root); returns the paths written."""
    root = Path(root)
    written: list[Path] = []
    tokenizer_dir = root / "clip_tokenizer" / TINY_TOKENIZER
    write_tokenizer(tokenizer_dir)
    written.append(tokenizer_dir)
    sd15 = tiny_sd15(seed)
    written += save_family(root, "tiny-sd15", sd15, tokenizer_dir)
    sdxl = tiny_sdxl(seed + 1)
    written += save_family(root, "tiny-sdxl", sdxl, tokenizer_dir)
    written.append(save_vae(root, seed + 2))
    written += save_loras(root, sd15, seed + 3)
    builders: list[Callable[[Path, int], Path | None]] = [
        lambda r, s: save_controlnet(r, sd15, s), save_esrgan, save_sam, save_clip_scorer, save_clip_vision]
    for offset, builder in enumerate(builders):
        path = builder(root, seed + 10 + offset)
        if path is not None:
            written.append(path)
    return written


# -- command line -------------------------------------------------------------------------------

def write_example_inputs(input_dir: Path, *, seed: int = 0) -> list[Path]:
    """The images the example workflows load: ``nodeloom_example.png`` (img2img) and
    ``nodeloom_inpaint.png``, whose transparent square is the area to inpaint (LoadImage's mask)."""
    import numpy as np
    from PIL import Image

    input_dir.mkdir(parents=True, exist_ok=True)
    rgb = (np.random.default_rng(seed).random((64, 64, 3)) * 255).astype(np.uint8)
    alpha = np.full((64, 64), 255, np.uint8)
    alpha[16:48, 16:48] = 0
    example, inpaint = input_dir / "nodeloom_example.png", input_dir / "nodeloom_inpaint.png"
    Image.fromarray(rgb).save(example)
    Image.fromarray(np.dstack([rgb, alpha])).save(inpaint)
    return [example, inpaint]


def main(argv: list[str]) -> int:
    """``nodeloom models tiny [--root DIR] [--seed N] [--inputs DIR]``."""
    parser = argparse.ArgumentParser(prog="nodeloom models", description="Model utilities.")
    sub = parser.add_subparsers(dest="command", required=True)
    tiny = sub.add_parser("tiny", help="write the tiny random-weight model zoo (no downloads)")
    tiny.add_argument("--root", type=Path, default=Path("models"), help="models root (default ./models)")
    tiny.add_argument("--seed", type=int, default=0, help="seed the weights derive from (default 0)")
    tiny.add_argument("--inputs", type=Path, default=Path("input"),
                      help="where to write the example workflows' input images (default ./input)")
    args = parser.parse_args(argv)
    import time

    started = time.perf_counter()
    paths = write_tiny_zoo(args.root, seed=args.seed) + write_example_inputs(args.inputs, seed=args.seed)
    for path in paths:
        print(path)
    print(f"tiny zoo: {len(paths)} files written to {args.root} in {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
