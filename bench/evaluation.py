"""FID through the FID node vs torchmetrics' FrechetInceptionDistance used directly, on the same
Inception weights file and images.

    python bench/evaluation.py                 # the tiny zoo's random Inception (written to a temp dir)
    python bench/evaluation.py --n 32 --root models   # models/inception/weights-inception-2015-12-05-6726825d.pth

The node extracts the reference features once and computes the Fréchet distance with torchmetrics
on them; the direct way updates a FrechetInceptionDistance with both image sets and computes.
Prints wall and CPU seconds of each (the fastest of --repeat runs; the Inception is loaded once
beforehand), their ratios (node / direct) and the relative difference of the two FIDs (~1e-8: the
same features and formula, torchmetrics returning float32).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8, help="images in each set")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each; the fastest counts")
    parser.add_argument("--root", type=Path, default=None, help="models root holding the tiny zoo")
    args = parser.parse_args(argv)

    from torchmetrics.image.fid import FrechetInceptionDistance

    from graph_runtime.context import Context, InterruptFlag, Services
    from graph_runtime.folders import FolderPaths
    from nodes.diffusion.zoo import tiny_zoo_at
    from nodes.evaluation.fid import FID, FOLDER, INCEPTION_FILE, inception_ref
    from nodes.infra.model_manager import manager_from

    root = tiny_zoo_at(args.root)
    folders = FolderPaths(base=Path(tempfile.mkdtemp()), models_roots=[root])
    services = Services()
    ctx = Context(prompt_id="bench", node_id="1", class_type="FID", folders=folders, services=services,
                  interrupt=InterruptFlag(), extra_data={}, report_progress=lambda *_: None)
    path = folders.model_path(FOLDER, INCEPTION_FILE)
    manager_from(services).ensure_loaded(inception_ref(path))
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(args.n, args.size, args.size, 3, generator=gen)
    fake = (torch.rand(args.n, args.size, args.size, 3, generator=gen) * 0.7).clamp(0, 1)

    def node() -> float:
        return FID().run(ctx, images=[fake], reference=[real], inception=[INCEPTION_FILE], resize=["antialiased"])[0]

    metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(path))

    def direct() -> float:
        metric.reset()
        for images, is_real in ((real, True), (fake, False)):  # 8-bit as the node quantises them (rounded)
            metric.update((images * 255).round().to(torch.uint8).permute(0, 3, 1, 2), real=is_real)
        return float(metric.compute().double())

    def timed(fn) -> tuple[float, float, float]:
        """(FID, wall s, CPU s), the fastest of ``--repeat`` runs: the first pays one-off kernel set-up."""
        best = (0.0, float("inf"), float("inf"))
        for _ in range(args.repeat):
            start, cpu = time.perf_counter(), time.process_time()
            value = fn()
            wall, used = time.perf_counter() - start, time.process_time() - cpu
            best = min(best, (value, wall, used), key=lambda t: t[2])
        return best

    node_fid, node_s, node_cpu = timed(node)
    direct_fid, direct_s, direct_cpu = timed(direct)
    print(f"{args.n}+{args.n} images of {args.size}px, Inception at 299px ({path.name})")
    print(f"FID node:          {node_s:7.2f} s wall {node_cpu:7.2f} s CPU   FID {node_fid:.6f}")
    print(f"torchmetrics:      {direct_s:7.2f} s wall {direct_cpu:7.2f} s CPU   FID {direct_fid:.6f}")
    print(f"ratio node/direct: {node_s / direct_s:7.2f} wall {node_cpu / direct_cpu:7.2f} CPU "
          "(CPU time is the fairer figure on a shared machine)")
    print(f"relative FID difference: {abs(node_fid - direct_fid) / abs(direct_fid):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
