"""The bundled demo model (docs/demo.md): its proofs as figures, and what `nodeloom demo` costs.

    python bench/demo.py            # all figures, `nodeloom demo` timed 3 times
    python bench/demo.py --runs 0   # figures only
    python bench/demo.py --runs 0 --gallery docs/images/demo.png   # also the README's picture

On the 40 held-out prompts, one picture each: colour / background / shape accuracy (shape by the
separately trained classifier) for the demo's sampling (SLAMSampler 4 steps), for the student's
deterministic 4 steps (KSampler tcd) and for the teacher (DDIM 25 and DDIM 4, cfg 3); the MSE of
each 4-step sampler to the teacher's DDIM 25 from the same noise (the reference of this run); the
SLAM proof's figures over 4 noises per prompt (mean and median MSE, how often the student is the
closer); the scorer's caption ranking; the upscaler's PSNR on held-out 32 -> 128 render pairs beside
nearest-neighbour and bicubic; and the wall time of `nodeloom demo` (a fresh process each time, process
start included) beside `python -c "import torch"` measured in the same run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nodes.demo import proofs  # noqa: E402
from nodes.demo.judge import judge  # noqa: E402
from nodes.demo.products import held_out_prompts  # noqa: E402


def wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


GALLERY = ("a red bottle on a white background", "a blue lamp on a yellow background",
           "a yellow shoe on a green background", "a purple mug on a gray background",
           "a green box on a black background", "an orange lamp on a gray background",
           "a pink box on a red background", "a white shoe on a green background")


def gallery(path: Path) -> None:
    """``workflows/demo.json`` (best of 4, ESRGAN x4) on 8 held-out prompts, side by side, 4 x 2."""
    import json

    from PIL import Image

    from graph_runtime import FolderPaths, Runtime, load_registry

    registry = load_registry()
    workflow = json.loads((Path(__file__).resolve().parents[1] / "workflows" / "demo.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        folders = FolderPaths(base=Path(tmp))
        registry.add_bundled_model_paths(folders)
        runtime = Runtime(registry, folders=folders)
        for prompt in GALLERY:
            workflow["2"]["inputs"]["value"] = prompt
            assert runtime.execute(workflow).status == "success", prompt
        pictures = [Image.open(p).convert("RGB") for p in sorted((Path(tmp) / "output").glob("nodeloom_demo_*.png"))]
        side = pictures[0].width
        sheet = Image.new("RGB", (side * 4, side * 2), "white")
        for i, picture in enumerate(pictures):
            sheet.paste(picture, (side * (i % 4), side * (i // 4)))
        path.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(path)
    print(f"wrote {path}: {'; '.join(GALLERY)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed `nodeloom demo` runs")
    parser.add_argument("--gallery", type=Path, help="also write the demo's pictures of 8 held-out prompts here")
    args = parser.parse_args()
    if args.gallery:
        gallery(args.gallery)
    prompts = held_out_prompts()
    with tempfile.TemporaryDirectory() as tmp:
        ctx = proofs.demo_context(Path(tmp))
        models = proofs.load(ctx)
        reference = proofs.pictures(ctx, models, prompts, student=False, steps=25)
        rows = {"teacher DDIM 25 (cfg 3)": reference,
                "teacher DDIM 4 (cfg 3)": proofs.pictures(ctx, models, prompts, student=False, steps=4),
                "student tcd 4 (cfg 1, deterministic)": proofs.pictures(ctx, models, prompts, student=True, steps=4,
                                                                        sampler="tcd"),
                "student SLAMSampler 4 (the demo)": proofs.pictures(ctx, models, prompts, student=True, steps=4,
                                                                    sampler="slam")}
        print(f"{'sampling':40} {'colour':>7} {'backgr':>7} {'shape':>7} {'all':>7} {'MSE to DDIM 25':>15}")
        for name, images in rows.items():
            v = judge(images.numpy(), prompts)
            print(f"{name:40} {v.colour_accuracy:7.1%} {v.background_accuracy:7.1%} {v.shape_accuracy:7.1%} "
                  f"{v.accuracy:7.1%} {proofs.mse(images, reference):15.5f}")
        errors = proofs.slam_errors(ctx, models, prompts)
        teacher, student = errors["teacher"], errors["student"]
        print(f"SLAM proof, {len(teacher)} pictures ({len(proofs.SLAM_PROOF_SEEDS)} noises per prompt), MSE to DDIM 25: "
              f"teacher DDIM 4 mean {teacher.mean():.5f} median {teacher.median():.5f}; student tcd 4 mean "
              f"{student.mean():.5f} median {student.median():.5f}; student closer for {(student < teacher).float().mean():.1%}")
        print(f"scorer: a held-out render's own caption first among all 255 captions for "
              f"{proofs.caption_ranking(ctx, prompts):.1%}, among the 40 held-out ones for "
              f"{proofs.caption_ranking(ctx, prompts, candidates=prompts):.1%}")
        psnr = proofs.upscaler_psnr(ctx, prompts)
        print("upscaler x4 on the held-out prompts' render pairs, PSNR: "
              + ", ".join(f"{name} {db:.1f} dB" for name, db in psnr.items()))
    if args.runs:
        floor = min(wall([sys.executable, "-c", "import torch"]) for _ in range(args.runs))
        with tempfile.TemporaryDirectory() as tmp:
            demo = [wall([sys.executable, "-m", "graph_runtime.cli", "demo", "--base", tmp, "--no-progress"])
                    for _ in range(args.runs)]
        print(f"nodeloom demo (n=4): best {min(demo):.1f} s, median {sorted(demo)[len(demo) // 2]:.1f} s; "
              f"import torch {floor:.1f} s (ratio {min(demo) / floor:.1f})")


if __name__ == "__main__":
    main()
