"""The same txt2img through NodeLoom's KSampler and through diffusers' pipeline, in one process.

    python bench/sampling.py                    # tiny zoo model, CPU ok (writes the zoo to a temp dir)
    python bench/sampling.py --size sd15        # full-size random-weight SD1.5 UNet (use a GPU)
    python bench/sampling.py --size sdxl --steps 20 --height 1024 --width 1024

Prints per-step time of both and their ratio (target <= 1.05). Both share the very same modules,
so the ratio measures our loop's overhead (conditioning, guidance batching, previews).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def _full_size_checkpoint(root: Path, family: str) -> str:
    """A random-weight checkpoint with the published UNet size and the tiny text encoders/VAE."""
    from safetensors.torch import save_file

    from nodes.diffusion.families import family as family_spec
    from nodes.infra import ldm_keys
    from nodes.infra.files import METADATA_KEY, read_state_dict

    from diffusers import UNet2DConditionModel

    spec_of_family = family_spec(family)
    tiny = f"tiny-{family}"
    tensors, meta = read_state_dict(root / "checkpoints" / f"{tiny}.safetensors")
    spec = json.loads(meta[METADATA_KEY])
    unet_cfg = dict(spec_of_family.shipped_config()["unet"])
    text_dims = sum(spec[k]["hidden_size"] for k in ("text_encoder", "text_encoder_2") if k in spec)
    unet_cfg["cross_attention_dim"] = text_dims
    if spec_of_family.size_conditioning:
        unet_cfg["projection_class_embeddings_input_dim"] = 6 * 256 + spec["text_encoder_2"]["projection_dim"]
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**unet_cfg)
    spec["unet"] = json.loads(json.dumps({k: v for k, v in dict(unet.config).items() if not k.startswith("_")}))
    tensors = {k: v for k, v in tensors.items() if not k.startswith(ldm_keys.UNET_PREFIX)}
    tensors.update(ldm_keys.prefixed(ldm_keys.unet_to_ldm(unet.state_dict(), spec["unet"]), ldm_keys.UNET_PREFIX))
    name = f"bench-{family}.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(root / "checkpoints" / name),
              metadata={METADATA_KEY: json.dumps(spec)})
    return name


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "sd15", "sdxl"], default="tiny")
    parser.add_argument("--family", choices=["sd15", "sdxl"], default="sd15", help="tiny model family")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--root", type=Path, default=None, help="models root holding the tiny zoo")
    args = parser.parse_args(argv)

    from graph_runtime.context import Context, InterruptFlag, Services
    from graph_runtime.folders import FolderPaths
    from nodes.diffusion.families import family as family_spec
    from nodes.diffusion.zoo import tiny_zoo_at
    from nodes.infra.model_manager import manager_from

    from tests.diffusion.diffusion_helpers import NEGATIVE, POSITIVE, encode, load, pipeline  # type: ignore

    root = tiny_zoo_at(args.root)
    family = args.family if args.size == "tiny" else args.size
    ckpt = f"tiny-{family}.safetensors" if args.size == "tiny" else _full_size_checkpoint(root, family)
    side = 64 if args.size == "tiny" else family_spec(family).default_resolution
    height, width = args.height or side, args.width or side

    ctx = Context(prompt_id="bench", node_id="3", class_type="KSampler", folders=FolderPaths(base=root.parent, models_roots=[root]),
                  services=Services(), interrupt=InterruptFlag(), report_progress=lambda *a: None, extra_data={})
    model, clip, vae = load(ctx, ckpt)
    manager = manager_from(ctx.services)
    pos, neg = encode(ctx, clip, POSITIVE), encode(ctx, clip, NEGATIVE)
    pipe = pipeline(ctx, model, clip, vae, "txt2img")
    pipe.to(manager.device)
    from nodes.diffusion.nodes_sampling import KSampler

    latent = {"samples": torch.zeros(family_spec(family).latent_shape(1, height, width))}

    def ours() -> None:
        KSampler().run(ctx, model=model, seed=1, steps=args.steps, cfg=7.0, sampler_name="euler", scheduler="normal",
                       positive=pos, negative=neg, latent_image=latent, denoise=1.0)

    def theirs() -> None:
        pipe(POSITIVE, negative_prompt=NEGATIVE, height=height, width=width, num_inference_steps=args.steps,
             guidance_scale=7.0, generator=torch.Generator().manual_seed(1), output_type="latent")

    def timed(fn) -> float:  # noqa: ANN001
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start

    ours(), theirs()  # warm-up
    a, b = [], []
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        a.append(timed(ours))
        b.append(timed(theirs))
    t_ours, t_theirs = statistics.median(a), statistics.median(b)
    print(f"device={manager.device} dtype={manager.dtype} model={ckpt} {width}x{height} steps={args.steps}")
    print(f"nodeloom : {t_ours:.3f}s  ({1000 * t_ours / args.steps:.1f} ms/step)")
    print(f"diffusers: {t_theirs:.3f}s  ({1000 * t_theirs / args.steps:.1f} ms/step)  (includes its prompt encoding)")
    print(f"ratio nodeloom/diffusers = {t_ours / t_theirs:.3f} (target <= 1.05)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
