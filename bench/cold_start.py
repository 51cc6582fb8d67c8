"""Cold ``nodeloom run``: wall time and where it goes, for image_ops.json and the tiny txt2img,
against ``python -c "import torch"`` (the floor of any workflow holding IMAGE tensors) and the
import of torch with the diffusers and transformers classes the txt2img builds (the floor of a
diffusion workflow), in one run.

    python bench/cold_start.py            # writes the tiny zoo to a temporary folder first
    python bench/cold_start.py --root models   # a models root holding the tiny zoo (or to write it to)
    python bench/cold_start.py --repeat 3 # best of 3 of each

Each workflow is run twice in fresh processes: once exactly as the command line runs it (the wall
time the targets are checked on), once through a driver that goes through the same steps and
stamps each phase: interpreter start, imports (the CLI and its plugins), registry (node classes),
validation, work (the run, with the imports its nodes make on first use: their count is printed),
and exit (from the run's end to the process being gone).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGETS = {"image_ops": 1.5, "txt2img": 3.0}

# The phases of ``nodeloom run`` as graph_runtime.cli performs them, stamped; the entry point's
# own end (freezing objects so shutdown does not collect them) included.
DRIVER = r"""
import sys, time, json
stamps = {"start": float(sys.argv[1])}
stamps["interpreter"] = time.time()
import gc
from pathlib import Path
from graph_runtime import cli
from graph_runtime.headless import environment, load_workflow
from graph_runtime.registry import load_plugins
stamps["imports"] = time.time()
registry = load_plugins()
registry.load_nodes()
args = cli.build_parser(registry).parse_args(["run", sys.argv[2], "--no-progress", "--base", sys.argv[3]])
env = environment(args)
stamps["registry"] = time.time()
workflow = load_workflow(Path(sys.argv[2]), env, [])
checked = env.runtime.validate(workflow.prompt)
assert checked.ok, checked.format()
stamps["validation"] = time.time()
modules = len(sys.modules)
result = env.runtime.execute(workflow.prompt, extra_data=workflow.extra_data)
assert result.status == "success", result.error
stamps["work"] = time.time()
print(json.dumps({"stamps": stamps, "work_imports": len(sys.modules) - modules}), flush=True)
cli._skip_shutdown_collection()
"""


# What any run that builds diffusers' UNet and VAE and a transformers text encoder imports (with
# the same frozen-objects exit as the command line): the floor of the txt2img figure.
LIBRARIES = ("import gc, torch; from diffusers import UNet2DConditionModel, AutoencoderKL; "
             "from transformers import CLIPTextModel; gc.freeze()")


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "HF_HUB_OFFLINE": "1"}


def wall(command: list[str], cwd: Path) -> float:
    began = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=_environment(), check=True, capture_output=True)
    return time.perf_counter() - began


def phases(workflow: Path, base: Path) -> dict[str, float]:
    began = time.time()
    done = subprocess.run([sys.executable, "-c", DRIVER, repr(began), str(workflow), str(base)], cwd=base,
                          env=_environment(), check=True, capture_output=True, text=True)
    ended = time.time()
    report = json.loads(done.stdout.strip().splitlines()[-1])
    stamps = report["stamps"]
    order = ["start", "interpreter", "imports", "registry", "validation", "work"]
    out = {name: stamps[name] - stamps[previous] for previous, name in zip(order, order[1:])}
    out["exit"] = ended - stamps["work"]
    out["work_imports"] = report["work_imports"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best is printed")
    parser.add_argument("--root", type=Path, default=None, help="models root holding the tiny zoo")
    args = parser.parse_args()
    # Written (or found) in a child process: this one stays free of torch.
    root = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                           "from nodes.diffusion.zoo import tiny_zoo_at; "
                           "print(tiny_zoo_at(Path(sys.argv[1]) if sys.argv[1] else None))", str(args.root or "")],
                          env=_environment(), check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    base = Path(tempfile.mkdtemp(prefix="nodeloom-cold-"))
    (base / "models").symlink_to(Path(root).resolve(), target_is_directory=True)
    floor = min(wall([sys.executable, "-c", "import torch"], base) for _ in range(args.repeat))
    print(f"floor: python -c 'import torch'  wall={floor:.2f} s")
    libraries = min(wall([sys.executable, "-c", LIBRARIES], base) for _ in range(args.repeat))
    print(f"floor of a diffusion run: importing torch and the diffusers/transformers classes the tiny "
          f"txt2img builds (UNet2DConditionModel, AutoencoderKL, CLIPTextModel)  wall={libraries:.2f} s")
    for name, target in TARGETS.items():
        path = REPO / "workflows" / f"{name}.json"
        command = [sys.executable, "-m", "graph_runtime.cli", "run", str(path), "--no-progress", "--base", str(base)]
        best = min(wall(command, base) for _ in range(args.repeat))
        split = min((phases(path, base) for _ in range(args.repeat)), key=lambda p: sum(
            v for k, v in p.items() if k != "work_imports"))
        parts = "  ".join(f"{k}={v:.2f}" for k, v in split.items() if k != "work_imports")
        verdict = "PASS" if best <= target else "FAIL"
        reference = f"{best / floor:.2f}x the torch import" + (
            f", {best / libraries:.2f}x its libraries' import" if name == "txt2img" else "")
        print(f"{name}: nodeloom run wall={best:.2f} s (target <= {target}: {verdict}; {reference})")
        print(f"  phases (s): {parts}  (modules imported during work: {split['work_imports']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
