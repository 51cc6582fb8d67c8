"""ProductShots: both folders in the imagefolder layout, DATASETs that serve the rendered pixels and
captions, reuse of a complete folder, and refusal of folders it did not write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from graph_runtime.context import Context, HookContext, InterruptFlag, Services
from graph_runtime.folders import FolderPaths
from nodes.demo.product_shots import STAMP, ProductShots
from nodes.demo.products import dataset_specs, render_pair

ARGS = dict(seed=3, count=6, resolution=32, upscale=4, folder="shots")


@pytest.fixture
def folders(tmp_path: Path) -> FolderPaths:
    return FolderPaths(base=tmp_path, models_roots=[tmp_path / "models"])


def _ctx(folders: FolderPaths, progress: list[float] | None = None) -> Context:
    progress = [] if progress is None else progress
    return Context(prompt_id="test", node_id="7", class_type="ProductShots", folders=folders, services=Services(),
                   interrupt=InterruptFlag(), extra_data={},
                   report_progress=lambda node, value, maximum, preview, text: progress.append(value))


def _check(folders: FolderPaths, **widgets: object) -> str | None:
    return ProductShots.validate_inputs(HookContext(folders=folders), **{**ARGS, **widgets})


def test_writes_both_folders_and_serves_them(folders: FolderPaths) -> None:
    assert _check(folders) is None
    low, high = ProductShots().run(_ctx(folders), **ARGS)
    root = folders.directory_for("input")
    shots = dataset_specs(3, 6)
    for name, size in (("shots", 32), ("shots_hr", 128)):
        rows = [json.loads(line) for line in (root / name / "metadata.jsonl").read_text().splitlines()]
        assert rows == [{"file_name": f"{i:05d}.png", "text": shot.spec.caption} for i, shot in enumerate(shots)]
        with Image.open(root / name / "00002.png") as picture:
            assert picture.size == (size, size)
    expected_low, expected_high = render_pair(shots[2].spec, shots[2].seed, 32, 4)
    for dataset, expected in ((low, expected_low), (high, expected_high)):
        assert len(dataset) == 6 and dataset.fixed_pixels
        pixels = dataset.item_pixels(2)  # [3, H, W] in -1..1
        want = torch.from_numpy(np.asarray(expected, np.float32) / 127.5 - 1).permute(2, 0, 1)
        assert torch.allclose(pixels, want, atol=1e-5)
        batch, captions = dataset.sample(4, torch.Generator().manual_seed(0))
        assert batch.shape[-2:] == want.shape[-2:] and all(c in {s.spec.caption for s in shots} for c in captions)


def test_same_inputs_render_nothing_and_new_inputs_replace_the_files(folders: FolderPaths) -> None:
    progress: list[float] = []
    ProductShots().run(_ctx(folders, progress), **ARGS)
    assert progress[-1] == 6
    picture = folders.directory_for("input") / "shots" / "00000.png"
    written = picture.stat().st_mtime_ns
    progress.clear()
    ProductShots().run(_ctx(folders, progress), **ARGS)
    assert progress == [] and picture.stat().st_mtime_ns == written
    fingerprint = ProductShots.fingerprint(HookContext(folders=folders), folder="shots")
    low, _ = ProductShots().run(_ctx(folders), **{**ARGS, "count": 4, "seed": 9})
    assert len(low) == 4 and not (picture.parent / "00005.png").exists()  # the old set's extra files went
    assert ProductShots.fingerprint(HookContext(folders=folders), folder="shots") != fingerprint


def test_caption_dropout_reaches_the_low_resolution_dataset(folders: FolderPaths) -> None:
    low, high = ProductShots().run(_ctx(folders), **ARGS, caption_dropout=1.0)
    assert low.sample(3, torch.Generator().manual_seed(0))[1] == [""] * 3
    assert all(high.sample(3, torch.Generator().manual_seed(0))[1])


def test_bad_inputs_are_refused_at_validation(folders: FolderPaths) -> None:
    foreign = folders.directory_for("input") / "mine_hr"
    foreign.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(foreign / "holiday.png")
    problem = _check(folders, folder="mine")
    assert "mine_hr already holds files not written by ProductShots" in problem
    with pytest.raises(ValueError, match="not written by ProductShots"):
        ProductShots().run(_ctx(folders), **{**ARGS, "folder": "mine"})
    assert (foreign / "holiday.png").exists() and not (foreign / STAMP).exists()
    assert "single folder name" in _check(folders, folder="a/b")
    assert "refusing file name" in _check(folders, folder="..")
    assert "at most 2048 pixels, got 512 x 8" in _check(folders, resolution=512, upscale=8)


def test_registered_in_the_demo_pack() -> None:
    from nodes.demo import nodeloom_register_nodes

    assert ProductShots in nodeloom_register_nodes()


def test_a_run_interrupted_midway_is_rendered_again_not_refused(folders: FolderPaths) -> None:
    def stop_after_two(node: str, value: float, maximum: float, preview: object, text: object) -> None:
        if value >= 2:
            raise KeyboardInterrupt  # as kill -9 or Ctrl-C between two pictures
    ctx = Context(prompt_id="test", node_id="7", class_type="ProductShots", folders=folders, services=Services(),
                  interrupt=InterruptFlag(), extra_data={}, report_progress=stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        ProductShots().run(ctx, **ARGS)
    shots = folders.directory_for("input") / "shots"
    assert (shots / "00001.png").exists() and not (shots / "00002.png").exists()
    assert _check(folders) is None  # ours, unfinished: not "files not written by ProductShots"
    low, _ = ProductShots().run(_ctx(folders), **ARGS)
    assert len(low) == 6 and json.loads((shots / STAMP).read_text()).get("partial") is None
