"""A cold ``nodeloom run`` imports what its workflow needs and leaves interpreter shutdown nothing
to collect. Checked on the real entry point in a fresh process, by what it imported (wall times
on a shared machine prove nothing)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
HEAVY = ("torch", "diffusers", "transformers", "diffusers.loaders.single_file_utils", "scipy", "peft", "networkx")

# Run as the console script does (``main()`` without arguments), then report from an atexit
# handler, which runs after main returned: what was imported, and whether objects were frozen.
PROBE = """
import atexit, gc, json, sys
atexit.register(lambda: print("PROBE " + json.dumps({
    "frozen": gc.get_freeze_count(),
    "imported": [m for m in %r if m in sys.modules]}), file=sys.stderr))
sys.argv = ["nodeloom", *%r]
from graph_runtime.cli import main
raise SystemExit(main())
"""


def _run(args: list[str], cwd: Path) -> tuple[int, dict]:
    result = subprocess.run([sys.executable, "-c", PROBE % (HEAVY, args)], cwd=cwd, capture_output=True,
                            text=True, timeout=300)
    probe = [line for line in result.stderr.splitlines() if line.startswith("PROBE ")]
    assert probe, result.stderr
    return result.returncode, json.loads(probe[-1][len("PROBE "):])


def test_image_ops_run_imports_no_diffusion_library_and_skips_shutdown_collection(tmp_path: Path) -> None:
    code, probe = _run(["run", str(WORKFLOWS / "image_ops.json"), "--no-progress", "--base", str(tmp_path)],
                       tmp_path)
    assert code == 0
    assert list((tmp_path / "output" / "nodeloom").glob("image_ops_*.png"))
    # torch holds the IMAGE tensors; nothing of diffusers, transformers, peft, scipy or networkx is loaded.
    assert probe["imported"] == ["torch"]
    assert probe["frozen"] > 100_000


def test_validate_imports_no_diffusion_library(tmp_path: Path) -> None:
    code, probe = _run(["validate", str(WORKFLOWS / "txt2img.json"), "--base", str(tmp_path)], tmp_path)
    assert code == 2  # no models folder: the checkpoint is missing, reported at validation
    assert "diffusers" not in probe["imported"] and "transformers" not in probe["imported"]


@pytest.mark.slow
def test_txt2img_run_on_the_tiny_zoo(tmp_path: Path, zoo_root: Path) -> None:
    shutil.copytree(zoo_root, tmp_path / "models")
    code, probe = _run(["run", str(WORKFLOWS / "txt2img.json"), "--no-progress", "--base", str(tmp_path)],
                       tmp_path)
    assert code == 0
    assert probe["frozen"] > 100_000
