"""`nodeloom demo` and the bundled models' place on every command's model path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from graph_runtime import FolderPaths, load_registry


def nodeloom(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "graph_runtime.cli", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_bundled_demo_models_come_after_the_users_own(tmp_path: Path) -> None:
    """The demo pack's folder is on the path; a user's file of the same name is found first."""
    registry = load_registry(builtins=("nodes.demo",), entry_points=False)
    mine = tmp_path / "models" / "checkpoints" / "nodeloom-demo.safetensors"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"mine")
    folders = FolderPaths(base=tmp_path)
    registry.add_bundled_model_paths(folders)
    assert "nodeloom-demo.safetensors" in folders.list_models("checkpoints")
    assert folders.model_path("checkpoints", "nodeloom-demo.safetensors") == mine
    assert "nodeloom-demo-clip" in folders.list_models("scorers")
    assert (folders.model_path("upscale_models", "nodeloom-demo-esrgan-x4.safetensors").parents[1]
            == Path(__file__).resolve().parents[2] / "nodes" / "demo" / "models")


def test_demo_refuses_a_bad_count_and_names_it(tmp_path: Path) -> None:
    done = nodeloom("demo", "--n", "0", cwd=tmp_path)
    assert done.returncode == 2 and "--n must be 1 to 64, got 0" in done.stderr
    assert not (tmp_path / "output").exists()


def test_run_options_pass_through_and_unknown_ones_are_named(tmp_path: Path) -> None:
    done = nodeloom("demo", "--frobnicate", cwd=tmp_path)
    assert done.returncode == 2 and "--frobnicate" in done.stderr


def test_a_set_on_an_input_the_demo_options_own_is_refused_not_replaced(tmp_path: Path) -> None:
    """`--set 2.value=…` would be overwritten by --prompt's default: the picture would silently be of
    another prompt. It is refused, naming the option to use; other --set pass through."""
    done = nodeloom("demo", "--set", "2.value=a blue lamp on a yellow background", "--set", "6.seed=5",
                    "--set", "6.steps=2", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "--set 2.value is what --prompt sets: use --prompt" in done.stderr
    assert "--set 6.seed is what --seed sets: use --seed" in done.stderr
    assert "6.steps" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "output").exists()


def test_from_png_is_named_as_a_run_option(tmp_path: Path) -> None:
    done = nodeloom("demo", "--from-png", "x.png", cwd=tmp_path)
    assert done.returncode == 2 and "nodeloom demo:" in done.stderr and "--from-png" in done.stderr, done.stderr
    assert "nodeloom run:" not in done.stderr
