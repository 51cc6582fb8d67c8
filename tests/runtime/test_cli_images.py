"""End to end on the real core image nodes: a UI-format file saved by ComfyUI's editor runs headless,
its output PNG carries the workflow, and ``--from-png`` runs it again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from graph_runtime import load_registry
from graph_runtime.cli import main
from graph_runtime.png import read_png_text

DATA = Path(__file__).parent / "data" / "ui"
NEEDED = {"LoadImage", "ImageScale", "ImageInvert", "SaveImage"}


@pytest.fixture
def base(tmp_path: Path) -> Path:
    if not NEEDED <= set(load_registry(builtins=("nodes.core",), entry_points=False).nodes):
        pytest.skip("nodes.core does not provide the core image nodes")
    (tmp_path / "input").mkdir()
    Image.new("RGB", (64, 32), (200, 50, 10)).save(tmp_path / "input" / "photo.png")
    (tmp_path / "plugins").mkdir()
    return tmp_path


def nodeloom(base: Path, *args: str) -> int:
    return main([args[0], "--base", str(base), "--plugins-dir", str(base / "plugins"), *args[1:]])


def test_ui_file_runs_and_its_png_runs_again(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert nodeloom(base, "run", str(DATA / "invert_and_scale_v04.json"), "--no-progress") == 0
    (saved,) = sorted((base / "output").glob("inverted_*.png"))
    assert str(saved) in capsys.readouterr().out
    with Image.open(saved) as image:
        assert image.size == (768, 256)  # the PrimitiveNode's width, not the stale widget value
        pixel = image.convert("RGB").getpixel((400, 100))
        assert all(abs(got - want) <= 1 for got, want in zip(pixel, (55, 205, 245)))  # inverted
    texts = read_png_text(saved)
    assert json.loads(texts["prompt"])["4"]["inputs"]["width"] == 768
    assert json.loads(texts["workflow"])["nodes"][0]["type"] == "LoadImage"  # the UI document

    assert nodeloom(base, "run", "--from-png", str(saved), "--set", "4.height=128", "--no-progress") == 0
    newest = max((base / "output").glob("inverted_*.png"), key=lambda p: p.stat().st_mtime_ns)
    with Image.open(newest) as image:
        assert image.size == (768, 128)


def test_missing_input_image_is_a_validation_error_naming_the_node(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (base / "input" / "photo.png").unlink()
    assert nodeloom(base, "run", str(DATA / "invert_and_scale_v04.json"), "--no-progress") == 2
    err = capsys.readouterr().err
    assert "node 1 (LoadImage)" in err and "photo.png" in err
