"""MetricsTable: CSV and JSON files with every row, per-value means, and a plot with one labelled
marker per swept value; a metric no row has is named."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from nodes.evaluation.rows import EvalRow
from nodes.evaluation.table import MetricsTable, draw, drawn_points, plot_points, summarise


def _rows() -> list[EvalRow]:
    rows = []
    for index, (value, prompt) in enumerate([(v, p) for v in (1.5, 4.0, 8.0) for p in ("a", "b")]):
        row = EvalRow(index=index, prompt=prompt, seed=7 + (prompt == "b"), sweep="guidance_scale", value=value)
        rows.append(row.with_metric("clip_score", 20 + value + (prompt == "b")).with_metric("fid", 100 / value))
    return rows


def test_files_hold_every_row_the_means_and_the_drawn_points(make_ctx, eval_folders) -> None:
    result = MetricsTable().run(make_ctx(), rows=_rows(), filename_prefix=["tables/sweep"], x_metric=["clip_score"],
                                y_metric=["fid"])
    [shown] = result.ui["images"]
    folder = eval_folders.output_dir / "tables"
    stem = shown["filename"].removesuffix(".png")
    with open(folder / f"{stem}.csv") as handle:
        lines = list(csv.DictReader(handle))
    assert len(lines) == 6 and list(lines[0]) == ["row", "prompt", "guidance_scale", "seed", "clip_score", "fid"]
    assert lines[3] == {"row": "3", "prompt": "b", "guidance_scale": "4.0", "seed": "8", "clip_score": "25.0",
                        "fid": "25.0"}
    report = json.loads((folder / f"{stem}.json").read_text())
    assert [s["clip_score"] for s in report["summary"]] == [22.0, 24.5, 28.5]
    assert report["plot"]["points"] == [{"label": f"guidance_scale={v}", "x": 20.5 + v, "y": 100 / v}
                                        for v in (1.5, 4.0, 8.0)]
    plot = result.outputs[0]
    assert plot.shape == (1, 480, 640, 3) and shown["subfolder"] == "tables"
    assert (plot < 0.5).any() and (plot > 0.9).any()  # drawn on, not blank


def test_one_marker_per_value_drawn_and_labelled() -> None:
    summary = summarise(_rows())
    figure = draw(plot_points(summary, "guidance_scale", "clip_score", "fid"), "clip_score", "fid", "t")
    axes = figure.axes[0]
    [line] = axes.lines
    assert line.get_marker() == "o" and len(line.get_xydata()) == 3
    np.testing.assert_allclose(drawn_points(figure), [(22.0, 100 / 1.5), (24.5, 25.0), (28.5, 12.5)])
    assert [t.get_text() for t in axes.texts] == ["guidance_scale=1.5", "guidance_scale=4.0", "guidance_scale=8.0"]


def test_the_swept_value_on_x_when_x_metric_is_empty() -> None:
    points = plot_points(summarise(_rows()), "guidance_scale", "", "clip_score")
    assert [(p.x, p.y) for p in points] == [(1.5, 22.0), (4.0, 24.5), (8.0, 28.5)]


def test_a_metric_no_row_has_is_named(make_ctx) -> None:
    with pytest.raises(ValueError, match="metric 'pick_score' is not in the rows at guidance_scale = 1.5 "
                                         r"\(they have: clip_score, fid\)"):
        MetricsTable().run(make_ctx(), rows=_rows(), filename_prefix=["t"], x_metric=["clip_score"],
                           y_metric=["pick_score"])


def test_a_swept_value_that_is_not_a_number_on_x_is_named() -> None:
    rows = [EvalRow(index=i, prompt="a", sweep="ckpt", value=name).with_metric("fid", 1.0 + i)
            for i, name in enumerate(["a.safetensors", "b.safetensors"])]
    with pytest.raises(ValueError, match="x_metric: ckpt = 'a.safetensors' is not a number to plot; name a metric"):
        plot_points(summarise(rows), "ckpt", "", "fid")
    assert [p.label for p in plot_points(summarise(rows), "ckpt", "fid", "fid")] == ["ckpt=a.safetensors",
                                                                                    "ckpt=b.safetensors"]
