"""FaceDetailer (crop, re-render at working size, paste) vs re-rendering the whole image with the face
as noise mask (masked img2img at full resolution), in one process on the same models.

    python bench/detail.py                          # tiny zoo, CPU ok: 512² photo, guide_size 256
    python bench/detail.py --size 1024 --guide-size 512 --steps 20 --checkpoint models/checkpoints/x.safetensors

Prints the time of each, their ratio (detailer / whole image), and how many pixels the face gets in
each (the detailer's point: more pixels for the face, fewer for the rest). On the tiny zoo the
figures measure the pipeline's shape, not image quality.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def _photo(size: int) -> torch.Tensor:
    from skimage import data  # the test extra; a photo with a face

    image = torch.from_numpy(data.astronaut()).float().div(255)[None]
    return F.interpolate(image.movedim(-1, 1), size=(size, size), mode="bicubic").clamp(0, 1).movedim(1, -1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--guide-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint file (default: the tiny zoo's SD1.5)")
    args = parser.parse_args()

    from graph_runtime.context import Context, InterruptFlag, Services
    from graph_runtime.folders import FolderPaths
    from nodes.detail.detailer import FaceDetailer
    from nodes.detail.detect import BBoxDetectHaar
    from nodes.detail.regions import crop_region, feathered
    from nodes.diffusion import vae_ops
    from nodes.diffusion.nodes_conditioning import CLIPTextEncode
    from nodes.diffusion.nodes_loaders import CheckpointLoaderSimple
    from nodes.diffusion.sampling import SampleSettings, sample
    from nodes.diffusion.zoo import write_tiny_zoo
    from nodes.infra.model_manager import manager_from

    tmp = Path(tempfile.mkdtemp())
    root = args.checkpoint.parent.parent if args.checkpoint else tmp / "models"
    if not args.checkpoint:
        write_tiny_zoo(root)
    name = args.checkpoint.name if args.checkpoint else "tiny-sd15.safetensors"
    ctx = Context(prompt_id="bench", node_id="1", class_type="bench",
                  folders=FolderPaths(base=tmp, models_roots=[root]), services=Services(), interrupt=InterruptFlag(),
                  report_progress=lambda *a: None, extra_data={})
    model, clip, vae = CheckpointLoaderSimple().run(ctx, ckpt_name=name)
    positive, negative = (CLIPTextEncode().run(ctx, text=t, clip=clip)[0] for t in ("a detailed face", "blurry"))
    image = _photo(args.size)
    (boxes,) = BBoxDetectHaar().run(ctx, image=image, cascade="haarcascade_frontalface_default.xml",
                                   scale_factor=1.1, min_neighbors=5, min_size=16, max_count=1)
    assert boxes, "no face found"
    box, manager = boxes[0], manager_from(ctx.services)
    settings = {"seed": 0, "steps": args.steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
                "denoise": 0.5}
    models = {"model": model, "vae": vae, "positive": positive, "negative": negative}

    def detailer() -> None:
        FaceDetailer().run(ctx, image=image, bboxes=boxes, guide_size=args.guide_size, max_size=2 * args.guide_size,
                           crop_factor=3.0, dilation=4, feather=5, **models, **settings)

    def whole_image() -> None:
        mask = torch.zeros(image.shape[:3])
        x0, y0, x1, y1 = box.pixels()
        mask[0, y0:y1, x0:x1] = 1
        latent = {"samples": vae_ops.encode(manager, vae, image), "noise_mask": mask}
        latent = sample(manager, model, positive, negative, latent, SampleSettings(**settings))
        redrawn = vae_ops.decode(manager, vae, latent["samples"])
        weight = feathered(mask, dilation=4, feather=5)[..., None]
        _ = image * (1 - weight) + redrawn * weight

    def best(run) -> float:  # noqa: ANN001
        run()  # warm-up: first-call allocations and kernel choices
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
        return min(times)

    crop = crop_region(image, box, None, crop_factor=3.0, guide_size=args.guide_size, max_size=2 * args.guide_size)
    scale = crop.image.shape[1] / (crop.region.y1 - crop.region.y0)
    face_px = int(box.width * box.height)
    t_detail, t_whole = best(detailer), best(whole_image)
    print(f"image {args.size}², face {int(box.width)}×{int(box.height)} px, {args.steps} steps, "
          f"guide_size {args.guide_size}, device {manager.device}")
    print(f"FaceDetailer     {t_detail:7.2f} s   face rendered at {int(face_px * scale * scale):,} px "
          f"(crop {crop.image.shape[2]}×{crop.image.shape[1]})")
    print(f"whole image      {t_whole:7.2f} s   face rendered at {face_px:,} px ({args.size}×{args.size} sampled)")
    print(f"ratio detailer / whole image: {t_detail / t_whole:.2f}; face pixels ×{scale * scale:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
