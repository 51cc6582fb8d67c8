"""ControlNet sampling through the graph vs diffusers' ControlNet pipeline, in one process.

    python bench/controlnet.py                  # tiny zoo (written to a temp dir), CPU ok
    python bench/controlnet.py --stacked 2 --steps 20

Both sides share the very same UNet, ControlNet(s), text encoder and VAE, and run the whole
txt2img (encode, sample, decode). Prints the median time of each, their ratio (target <= 1.05:
the hook adds no work beyond the pipeline's), and the cost of the ControlNet(s) relative to plain
sampling in the graph.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "diffusion"), str(ROOT / "tests" / "control")]


def _median(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm: loads, first-call allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--stacked", type=int, default=1, choices=[1, 2, 3])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--root", type=Path, default=None, help="models root holding the tiny zoo")
    args = parser.parse_args(argv)

    from control_helpers import control_image, graph_image, pipeline_image  # type: ignore
    from diffusion_helpers import txt2img  # type: ignore
    from graph_runtime.context import Context, InterruptFlag, Services
    from graph_runtime.folders import FolderPaths
    from nodes.control.hook import ControlHook
    from nodes.diffusion.denoiser import DENOISER_HOOKS
    from nodes.diffusion.zoo import tiny_zoo_at

    root = tiny_zoo_at(args.root)
    DENOISER_HOOKS.register(ControlHook(), source="plugin 'nodes.control'")
    ctx = Context(prompt_id="bench", node_id="1", class_type="bench", folders=FolderPaths(base=root.parent, models_roots=[root]),
                  services=Services(), interrupt=InterruptFlag(), report_progress=lambda *a: None, extra_data={})
    controls = [("tiny-controlnet-sd15.safetensors", control_image(i), 0.8, 0.0, 1.0) for i in range(args.stacked)]
    ckpt = "tiny-sd15.safetensors"
    graph = _median(lambda: graph_image(ctx, ckpt, controls, steps=args.steps), args.repeats)
    pipe = _median(lambda: pipeline_image(ctx, ckpt, controls, steps=args.steps), args.repeats)
    plain = _median(lambda: txt2img(ctx, ckpt, steps=args.steps), args.repeats)
    print(f"{args.stacked} ControlNet(s), {args.steps} steps, 64x64, tiny SD1.5")
    print(f"graph    {graph * 1000:8.1f} ms")
    print(f"pipeline {pipe * 1000:8.1f} ms   graph/pipeline = {graph / pipe:.3f}")
    print(f"no ControlNet (graph) {plain * 1000:8.1f} ms   with/without = {graph / plain:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
