"""Peak memory of loading a full-size single-file checkpoint, against the weights it loads.

    python bench/load.py                         # SDXL base (6.9 GB fp16 file), loaded in fp16
    python bench/load.py --family sd15           # SD1.5 (2.1 GB)
    python bench/load.py --dtype fp32            # the CPU's dtype: needs ~15 GB of free RAM for SDXL
    python bench/load.py --dir /big/disk --keep  # where the file is written; keep it afterwards

The checkpoint is written from the published configs with random weights, tensor by tensor (see
``nodes/diffusion/zoo/full_size.py``), in a fresh subprocess; another fresh subprocess loads it
with ``load_checkpoint`` (UNet and text encoders in ``--dtype``, the VAE in fp32, as the model
manager asks on a GPU) and reports its peak RSS. Printed: peak RSS of the build, file size, loaded
weights, peak RSS of the load and the ratio peak RSS / loaded weights (target <= 1.3), also with
the interpreter's baseline (torch, diffusers, transformers imported) subtracted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
GB = 1e9


def _peak_rss() -> int:
    """VmHWM (Linux): unlike ru_maxrss it does not carry over the forking parent's pages."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child_build(path: Path, family: str) -> dict[str, float]:
    from nodes.diffusion.zoo.full_size import write_full_size_checkpoint

    start = time.perf_counter()
    write_full_size_checkpoint(path, family)
    return {"build_s": time.perf_counter() - start, "build_peak_rss": _peak_rss()}


def _child_load(path: Path, dtype_name: str) -> dict[str, float]:
    import psutil
    import torch

    import diffusers  # noqa: F401 - imported before the baseline, as in a running server
    import transformers  # noqa: F401
    from nodes.diffusion.checkpoint import load_checkpoint
    from nodes.infra.model_manager import module_bytes
    from nodes.infra.tokenizer import find_tokenizer_dir

    baseline = psutil.Process().memory_info().rss
    dtype = getattr(torch, DTYPES[dtype_name])
    dtypes = {"unet": dtype, "text_encoder": dtype, "text_encoder_2": dtype, "vae": torch.float32}
    start = time.perf_counter()
    comp = load_checkpoint(path, tokenizer_root=lambda name: find_tokenizer_dir(name, []), dtypes=dtypes)
    seconds = time.perf_counter() - start
    modules = [comp.unet, comp.vae, *comp.text_encoders]
    return {"load_s": seconds, "baseline_rss": baseline, "load_peak_rss": _peak_rss(),
            "loaded_bytes": sum(module_bytes(m) for m in modules if m is not None)}


def _in_child(*args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=["sd15", "sd21", "sdxl"], default="sdxl")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="UNet and text encoders")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the file (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the file (default: delete it)")
    parser.add_argument("--child", choices=["build", "load"], help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "build":
        print(json.dumps(_child_build(args.path, args.family)))
        return 0
    if args.child == "load":
        print(json.dumps(_child_load(args.path, args.dtype)))
        return 0

    folder = Path(tempfile.mkdtemp(dir=args.dir))
    path = folder / f"bench-{args.family}.safetensors"
    try:
        built = _in_child("--child", "build", "--family", args.family, "--path", str(path))
        loaded = _in_child("--child", "load", "--dtype", args.dtype, "--path", str(path))
        size = path.stat().st_size
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    weights, peak, base = loaded["loaded_bytes"], loaded["load_peak_rss"], loaded["baseline_rss"]
    print(f"{args.family} single file, random weights: {size / GB:.2f} GB written in {built['build_s']:.0f}s, "
          f"build peak RSS {built['build_peak_rss'] / GB:.2f} GB")
    print(f"load ({args.dtype}, VAE fp32): {loaded['load_s']:.1f}s, loaded weights {weights / GB:.2f} GB, "
          f"peak RSS {peak / GB:.2f} GB (interpreter baseline {base / GB:.2f} GB)")
    print(f"peak RSS / loaded weights = {peak / weights:.3f} (target <= 1.3); "
          f"without the baseline {(peak - base) / weights:.3f}; peak RSS / file size = {peak / size:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
