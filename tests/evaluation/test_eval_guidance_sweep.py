"""workflows/eval_guidance_sweep.json on the tiny zoo: 3 guidance scales x 4 prompts -> 12 rows, each
naming its prompt, guidance scale and seed, and a plot with one marker per guidance scale. The
default run leaves FID out (Inception v3 at 299x299 takes seconds an image on a CPU); the whole
workflow runs in the slow set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodes.diffusion.zoo import EVAL_PROMPTS

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "eval_guidance_sweep.json"
SCALES = [1.5, 4.0, 8.0]


def _report(runtime, result, table: str = "13") -> dict:
    assert result.status == "success", result.error
    [plot] = result.outputs[table]["images"]
    folder = runtime.folders.output_dir / plot["subfolder"]
    return json.loads((folder / plot["filename"].replace(".png", ".json")).read_text())


def _check_rows(report: dict, metrics: set[str]) -> None:
    rows = report["rows"]
    assert len(rows) == 12
    prompts = list(EVAL_PROMPTS.values())
    assert [(r["row"], r["prompt"], r["guidance_scale"], r["seed"]) for r in rows] == [
        (4 * s + p, prompts[p], scale, 42 + p) for s, scale in enumerate(SCALES) for p in range(4)]
    assert all(metrics <= set(r) for r in rows)
    points = report["plot"]["points"]
    assert [p["label"] for p in points] == [f"guidance_scale={s}" for s in SCALES]
    assert [s["rows"] for s in report["summary"]] == [4, 4, 4]


def test_the_sweep_gives_12_rows_and_one_point_per_scale(eval_runtime) -> None:
    prompt = json.loads(WORKFLOW.read_text())
    del prompt["12"], prompt["14"]  # FID and the image set: the slow test runs them
    prompt["13"]["inputs"] |= {"rows": ["11", 1], "y_metric": "pick_score"}
    prompt["7"]["inputs"]["steps"] = 1  # the rows and the plot are what is checked here, not the images
    result = eval_runtime.execute(prompt)
    report = _report(eval_runtime, result)
    _check_rows(report, {"clip_score", "pick_score"})
    # each point is the mean over its scale's four rows
    for point, scale in zip(report["plot"]["points"], SCALES):
        picks = [r["pick_score"] for r in report["rows"] if r["guidance_scale"] == scale]
        assert point["y"] == pytest.approx(sum(picks) / 4)
    assert len({p["y"] for p in report["plot"]["points"]}) == 3  # the scales made different images


@pytest.mark.slow
def test_the_whole_workflow_with_fid(eval_runtime) -> None:
    result = eval_runtime.execute(json.loads(WORKFLOW.read_text()))
    report = _report(eval_runtime, result)
    _check_rows(report, {"clip_score", "pick_score", "fid"})
    fids = [p["y"] for p in report["plot"]["points"]]
    assert all(f > 0 for f in fids) and len(set(fids)) == 3
    saved = result.outputs["14"]["images"]
    assert len(saved) == 12
