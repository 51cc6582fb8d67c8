"""SaveImageSet writes every image of a list with the rows that made them; LoadImageSet reads the
folder back in name order; a missing or empty folder is a validation error naming it."""

from __future__ import annotations

import json
import shutil

import torch

from graph_runtime import HookContext
from nodes.evaluation.image_sets import LoadImageSet, SaveImageSet
from nodes.evaluation.rows import EvalRow


def test_a_saved_set_loads_back_pixel_for_pixel(make_ctx, eval_folders) -> None:
    batches = [(torch.randint(0, 256, (n, 20, 24, 3), generator=torch.Generator().manual_seed(n)) / 255).float()
               for n in (1, 2)]
    rows = [EvalRow(index=i, prompt=f"p{i}", seed=i, sweep="cfg", value=v) for i, v in enumerate((2.0, 5.0))]
    result = SaveImageSet().run(make_ctx(), images=batches, folder=["sets/run"], rows=rows)
    saved = eval_folders.output_dir / "sets" / "run"
    assert [e["filename"] for e in result.ui["images"]] == ["00000.png", "00001.png", "00002.png"]
    manifest = [json.loads(line) for line in (saved / "rows.jsonl").read_text().splitlines()]
    assert [(m["file"], m["prompt"], m["cfg"]) for m in manifest] == [
        ("00000.png", "p0", 2.0), ("00001.png", "p1", 5.0), ("00002.png", "p1", 5.0)]

    shutil.copytree(saved, eval_folders.input_dir / "sets_run", dirs_exist_ok=True)
    assert "sets_run" in LoadImageSet.inputs[0].current_choices(HookContext(eval_folders))
    images, names, count = LoadImageSet().run(make_ctx(), folder="sets_run", limit=0)
    assert count == 3 and names == ["00000.png", "00001.png", "00002.png"]
    torch.testing.assert_close(torch.cat(images), torch.cat(batches), atol=0, rtol=0)
    assert LoadImageSet().run(make_ctx(), folder="sets_run", limit=2)[2] == 2


def test_missing_or_empty_folders_are_named(eval_folders) -> None:
    ctx = HookContext(eval_folders)
    assert "folder 'nowhere' not found in the input folder" in LoadImageSet.validate_inputs(ctx, folder="nowhere")
    (eval_folders.input_dir / "empty").mkdir(exist_ok=True)
    assert "holds no image files" in LoadImageSet.validate_inputs(ctx, folder="empty")
    assert "refusing file name" in LoadImageSet.validate_inputs(ctx, folder="../outside")


def test_a_folder_leaving_output_is_refused(make_ctx) -> None:
    import pytest

    from graph_runtime.folders import UnsafePath

    with pytest.raises(UnsafePath, match="refusing file name '../elsewhere'"):
        SaveImageSet().run(make_ctx(), images=[torch.zeros(1, 4, 4, 3)], folder=["../elsewhere"])


def test_a_16_bit_greyscale_image_keeps_its_range(tmp_path) -> None:
    import numpy as np
    from PIL import Image

    from nodes.evaluation.image_sets import read_image

    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "depth.png")  # mode I;16: convert("RGB") clipped it to white
    image = read_image(tmp_path / "depth.png", 1 << 20)
    assert image.shape == (1, 32, 32, 3)
    torch.testing.assert_close(image[0, ..., 1], torch.from_numpy(ramp / 65535).float())


def test_a_smaller_run_into_the_same_folder_leaves_only_its_own_set(make_ctx, eval_folders) -> None:
    # the earlier run's 00002.png stayed behind, unnamed in rows.jsonl, and LoadImageSet read it back
    saved = eval_folders.output_dir / "sets" / "rerun"
    rows = [EvalRow(index=i, prompt=f"p{i}", seed=i, sweep="cfg", value=float(i)) for i in range(3)]
    SaveImageSet().run(make_ctx(), images=[torch.zeros(1, 4, 4, 3)] * 3, folder=["sets/rerun"], rows=rows)
    (saved / "notes.txt").write_text("mine")
    SaveImageSet().run(make_ctx(), images=[torch.ones(1, 4, 4, 3)] * 2, folder=["sets/rerun"], rows=rows[:2])
    assert sorted(p.name for p in saved.iterdir()) == ["00000.png", "00001.png", "notes.txt", "rows.jsonl"]
    assert len((saved / "rows.jsonl").read_text().splitlines()) == 2
    SaveImageSet().run(make_ctx(), images=[torch.ones(1, 4, 4, 3)], folder=["sets/rerun"])
    assert sorted(p.name for p in saved.iterdir()) == ["00000.png", "notes.txt"]  # no manifest naming old rows
