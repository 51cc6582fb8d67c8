"""The tiny model zoo: small random-weight models with real architectures and real file formats.

No weights can be downloaded where NodeLoom is tested, so ``nodeloom models tiny`` writes,
deterministically from a seed, everything the node families need into a models root:

    checkpoints/tiny-sd15.safetensors, tiny-sdxl.safetensors   single files, original key layout
    checkpoints/tiny-sd2-v, tiny-sd2-eps, tiny-sd15-inpainting SD2.x (v / epsilon) and 9-channel inpainting
    embeddings/tiny-sd15-ti.pt, tiny-sd15-ti3, tiny-sdxl-ti    textual inversions (.pt, .safetensors)
    diffusers/tiny-sd15/, diffusers/tiny-sdxl/                 the same weights as diffusers folders
    vae/tiny-vae.safetensors                                   an SD-layout VAE (other weights)
    loras/tiny-sd15-kohya.safetensors, tiny-sd15-diffusers.safetensors
    clip_tokenizer/tiny-clip/                                  the small BPE vocabulary they share
    controlnet/tiny-controlnet-sd15.safetensors, upscale_models/tiny-esrgan-x4.safetensors,
    sams/tiny-sam.safetensors, scorers/tiny-clip-scorer/, clip_vision/tiny-clip-vision.safetensors
    controlnet/tiny-controlnet-sd15-original.safetensors (+ fp16 pruned), tiny-controlnet-sdxl/,
    tiny-t2i-adapter-sd15/, annotators/ControlNetHED.pth, table5_pidinet.pth (see control_variants,
    annotators)
    inception/weights-inception-2015-12-05-6726825d.pth      FID's Inception v3, full size (46 MB fp16)

Single files carry their architecture in the ``nodeloom_config`` metadata entry, so loading needs
no guessing; each file is at most a few MB and the whole zoo takes seconds. ``full_size`` writes
published-size random-weight single files (no metadata, like downloaded ones) for slow tests and
``bench/load.py``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from nodes.diffusion.zoo.clip import save_clip_scorer, save_clip_vision
from nodes.diffusion.zoo.annotators import save_annotators
from nodes.diffusion.zoo.control_variants import save_control_variants
from nodes.diffusion.zoo.controlnet import save_controlnet
from nodes.diffusion.zoo.embeddings import save_embeddings
from nodes.diffusion.zoo.hr_images import write_hr_dataset
from nodes.diffusion.zoo.inception import save_inception
from nodes.diffusion.zoo.lcm import save_lcm_models
from nodes.diffusion.zoo.lora import save_loras
from nodes.diffusion.zoo.sam import TINY_SAM, build_sam, save_sam
from nodes.diffusion.zoo.sd import save_family, save_vae, tiny_sd15, tiny_sdxl
from nodes.diffusion.zoo.upscale import save_esrgan
from nodes.diffusion.zoo.variants import save_variants
from nodes.infra.tokenizer import TINY_TOKENIZER, write_tokenizer

__all__ = ["TINY_SAM", "build_sam", "main", "tiny_zoo_at", "write_captioned_dataset", "write_example_inputs",
           "write_tiny_zoo"]


ZOO_MARKER = ".nodeloom-tiny-zoo"


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
    written += save_variants(root, seed + 20) + save_embeddings(root, seed + 30)
    written += save_loras(root, sd15, seed + 3)
    written += save_lcm_models(root, sd15, sdxl, tokenizer_dir, seed + 4)
    builders: list[Callable[[Path, int], Path | None]] = [
        lambda r, s: save_controlnet(r, sd15, s), save_esrgan, save_sam, save_clip_scorer, save_clip_vision,
        save_inception]
    for offset, builder in enumerate(builders):
        path = builder(root, seed + 10 + offset)
        if path is not None:
            written.append(path)
    written += save_control_variants(root, sdxl, seed + 20) + save_annotators(root, seed + 30)
    (root / ZOO_MARKER).write_text(f"seed {seed}\n")  # last: a root holding it holds the whole zoo
    return written


def tiny_zoo_at(root: Path | None, *, seed: int = 0) -> Path:
    """A models root holding the whole tiny zoo: ``root`` when it already does (written by
    ``write_tiny_zoo``), else ``root`` (or a new temporary folder) after writing it there."""
    import tempfile

    root = Path(root) if root is not None else Path(tempfile.mkdtemp()) / "models"
    if not (root / ZOO_MARKER).is_file():
        write_tiny_zoo(root, seed=seed)
    return root


# -- command line -------------------------------------------------------------------------------

def write_example_inputs(input_dir: Path, *, seed: int = 0) -> list[Path]:
    """The images the example workflows load: ``nodeloom_example.png`` (img2img),
    ``nodeloom_inpaint.png``, whose transparent square is the area to inpaint (LoadImage's mask),
    ``nodeloom_product.png`` (ecom_product_background: a product on a transparent background) and
    ``nodeloom_face.png`` (face_touchup: scikit-image's astronaut photograph, public domain, NASA),
    the captioned ``nodeloom_dataset/`` (train_lora) and ``nodeloom_hr/`` (train_esrgan: captioned
    photograph crops), and ``nodeloom_eval_prompts.jsonl`` (eval_guidance_sweep: four prompts, each
    naming one of the images above as its reference)."""
    import numpy as np
    from PIL import Image

    input_dir.mkdir(parents=True, exist_ok=True)
    rgb = (np.random.default_rng(seed).random((64, 64, 3)) * 255).astype(np.uint8)
    alpha = np.full((64, 64), 255, np.uint8)
    alpha[16:48, 16:48] = 0
    example, inpaint = input_dir / "nodeloom_example.png", input_dir / "nodeloom_inpaint.png"
    Image.fromarray(rgb).save(example)
    Image.fromarray(np.dstack([rgb, alpha])).save(inpaint)
    return [example, inpaint, _write_product(input_dir / "nodeloom_product.png"),
            _write_face(input_dir / "nodeloom_face.png"), *write_captioned_dataset(input_dir / "nodeloom_dataset"),
            *write_hr_dataset(input_dir / "nodeloom_hr"), _write_prompt_set(input_dir / "nodeloom_eval_prompts.jsonl")]


def write_captioned_dataset(folder: Path, *, colour: tuple[int, int, int] = (200, 40, 40),
                            caption: str = "a red square") -> list[Path]:
    """A tiny dataset in the Hugging Face imagefolder layout (train_lora.json reads it): four 64×64
    images of one colour with a little noise, and a metadata.jsonl captioning each."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths, lines = [], []
    for index in range(4):
        pixels = np.clip(np.array(colour) + rng.normal(0, 6, (64, 64, 3)), 0, 255).astype(np.uint8)
        path = folder / f"{index:02d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
        lines.append(json.dumps({"file_name": path.name, "text": caption}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return [*paths, folder / "metadata.jsonl"]


EVAL_PROMPTS: dict[str, str] = {"nodeloom_example.png": "a colourful abstract painting", "nodeloom_inpaint.png": "a framed picture",
                "nodeloom_product.png": "a striped ball on a white background",
                "nodeloom_face.png": "a portrait of an astronaut in a white spacesuit"}


def _write_prompt_set(path: Path) -> Path:
    lines = [json.dumps({"prompt": prompt, "reference": image}) for image, prompt in EVAL_PROMPTS.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _write_face(path: Path) -> Path:
    """A real photograph with a face, shipped in a pip package, so the face detector has something
    to find without a download."""
    from PIL import Image
    from skimage import data

    Image.fromarray(data.astronaut()).save(path)
    return path


def _write_product(path: Path) -> Path:
    """A product cut-out as shops upload it: an opaque object (a striped disc) on a transparent
    background, which LoadImage's MASK marks as the area to generate."""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:64, 0:64]
    disc = (yy - 34) ** 2 + (xx - 32) ** 2 < 18 ** 2
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0] = np.where((yy // 6) % 2 == 0, 200, 90)
    rgb[..., 1] = 60 + 2 * xx
    rgb[..., 2] = 140
    Image.fromarray(np.dstack([rgb, np.where(disc, 255, 0).astype(np.uint8)])).save(path)
    return path


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
