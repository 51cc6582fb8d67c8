"""Best-of-N: N candidates in one batched KSampler call vs N separate single-image runs.

    python bench/best_of_n.py              # tiny zoo (written to a temp dir), N=4, CPU ok
    python bench/best_of_n.py --n 8 --steps 20 --root models

Both go through the runtime with workflows/best_of_n.json (loaders and prompts cached after the
first run, as in a real session). Prints seconds for each, their ratio (separate / batched), and
the largest pixel difference between batched candidate i and the separate run with seed + i
(KSampler seeds sample i with seed + i, so it should be ~0).
"""

from __future__ import annotations

import argparse
import copy
import json
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
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--root", type=Path, default=None, help="models root holding the tiny zoo")
    args = parser.parse_args(argv)

    from graph_runtime.executor import Runtime
    from graph_runtime.folders import FolderPaths
    from graph_runtime.registry import load_registry
    from nodes.diffusion.zoo import tiny_zoo_at

    root = tiny_zoo_at(args.root)
    registry = load_registry(builtins=("nodes.core", "nodes.diffusion", "nodes.scoring"), entry_points=False)
    runtime = Runtime(registry, folders=FolderPaths(base=Path(tempfile.mkdtemp()), models_roots=[root]))
    workflow = json.loads((ROOT / "workflows" / "best_of_n.json").read_text())
    workflow["3"]["inputs"]["steps"] = args.steps
    seed = workflow["3"]["inputs"]["seed"]

    def run(prompt: dict) -> torch.Tensor:
        result = runtime.execute(prompt, keep=["8"])
        assert result.status == "success", result.error
        return result.values["8"][0][0]

    warm = copy.deepcopy(workflow)
    warm["5"]["inputs"]["batch_size"], warm["3"]["inputs"]["seed"] = 1, seed + 10_000
    run(warm)  # loads models and encodes the prompts once, for both ways

    batched = copy.deepcopy(workflow)
    batched["5"]["inputs"]["batch_size"] = args.n
    began = time.perf_counter()
    together = run(batched)
    batched_s = time.perf_counter() - began

    began, apart = time.perf_counter(), []
    for index in range(args.n):
        single = copy.deepcopy(workflow)
        single["5"]["inputs"]["batch_size"], single["3"]["inputs"]["seed"] = 1, seed + index
        apart.append(run(single))
    separate_s = time.perf_counter() - began
    difference = (together - torch.cat(apart)).abs().max().item()
    print(f"N={args.n}, {args.steps} steps, tiny-sd15 on {'cuda' if torch.cuda.is_available() else 'cpu'}")
    print(f"batched: {batched_s:.2f}s  separate: {separate_s:.2f}s  ratio separate/batched: "
          f"{separate_s / batched_s:.2f}  max |batched_i - separate(seed+i)|: {difference:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
