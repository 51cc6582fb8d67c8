"""MetricsTable: the rows of an evaluation gathered into a CSV and a JSON file and a plot.

It takes its rows as the whole list (``input_is_list``): however many list-mapped runs made them
(12 for 3 guidance scales x 4 prompts), it runs once. The plot shows one labelled point per swept
value, at the means of two metrics over that value's rows (e.g. CLIP score vs FID across guidance
scales, the curve of the XGen-Image and Imagen evaluations), drawn with matplotlib's Agg backend.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from graph_runtime import Context, HookContext, Link, Node, Output, Result, String
from nodes.core.imaging import save_target, tensor_to_pil
from nodes.evaluation.rows import ROW_TYPE, EvalRow

PLOT_INCHES, PLOT_DPI = (6.4, 4.8), 100  # a 640x480 image


@dataclass(frozen=True)
class Point:
    label: str
    x: float
    y: float


def summarise(rows: list[EvalRow]) -> list[dict[str, Any]]:
    """One record per swept value (in first-appearance order): the value, its number of rows and
    the mean of each metric over them."""
    groups: dict[Any, list[EvalRow]] = {}
    for row in rows:
        groups.setdefault(row.value, []).append(row)
    summary = []
    for value, members in groups.items():
        names = dict.fromkeys(name for row in members for name in row.metrics)
        means = {name: float(np.mean([row.metrics[name] for row in members if name in row.metrics])) for name in names}
        summary.append({members[0].sweep: value, "rows": len(members), **means})
    return summary


def plot_points(summary: list[dict[str, Any]], sweep: str, x_metric: str, y_metric: str) -> list[Point]:
    """The plot's points: per swept value, (x_metric or the value itself when x_metric is "", y_metric).
    Raises ValueError naming a metric no row has, or a value at which it is undefined."""
    points = []
    for entry in summary:
        coords = []
        for metric in (x_metric or sweep, y_metric):
            if metric not in entry:
                known = sorted(k for k in entry if k not in ("rows", sweep))
                raise ValueError(f"metric {metric!r} is not in the rows at {sweep} = {entry[sweep]} (they have: "
                                 f"{', '.join(known) or 'no metrics'}); link a node that measures it")
            coords.append(_number(entry[metric], metric, sweep))
        if not all(math.isfinite(c) for c in coords):
            raise ValueError(f"{x_metric or sweep} or {y_metric} is undefined at {sweep} = {entry[sweep]}")
        points.append(Point(f"{sweep}={entry[sweep]}", coords[0], coords[1]))
    return points


def _number(value: Any, metric: str, sweep: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):  # a STRING sweep (checkpoints, samplers) has no numeric axis
        raise ValueError(f"x_metric: {metric} = {value!r} is not a number to plot; name a metric for the x axis "
                         f"(clip_score, pick_score, aesthetic_score, fid) when the {sweep} values are not "
                         f"numbers") from None


def draw(points: list[Point], x_label: str, y_label: str, title: str) -> Any:
    """A matplotlib Figure (Agg canvas, no pyplot state) with one labelled marker per point,
    joined in sweep order."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=PLOT_INCHES, dpi=PLOT_DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot([p.x for p in points], [p.y for p in points], marker="o", linestyle="-")
    for point in points:
        axes.annotate(point.label, (point.x, point.y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    return figure


def drawn_points(figure: Any) -> list[tuple[float, float]]:
    """The marker positions actually drawn in ``figure`` (what the JSON file reports)."""
    return [tuple(map(float, xy)) for line in figure.axes[0].lines for xy in line.get_xydata()]


def render(figure: Any) -> torch.Tensor:
    """The figure as IMAGE [1, H, W, 3] float 0..1."""
    figure.canvas.draw()
    rgba = np.asarray(figure.canvas.buffer_rgba())
    return torch.from_numpy(rgba[..., :3].astype(np.float32) / 255).unsqueeze(0)


def csv_text(rows: list[EvalRow]) -> str:
    records = [row.record() for row in rows]
    columns = list(dict.fromkeys(key for record in records for key in record))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


class MetricsTable(Node):
    category = "evaluation"
    display_name = "Metrics Table"
    description = ("Gather the rows of an evaluation (all of them, however many runs made them) into output/: "
                   "<prefix>_NNNNN_.csv (one line per row: row, prompt, swept value, seed, metrics), "
                   "<prefix>_NNNNN_.json (the rows, the per-value means and the plotted points) and a plot PNG "
                   "with one labelled point per swept value: y_metric against x_metric (the swept value itself "
                   "when x_metric is empty), each the mean over that value's rows. The plot is also the IMAGE "
                   "output. Metric names: clip_score, pick_score, aesthetic_score, fid.")
    output_node = True
    input_is_list = True
    inputs = [Link("rows", ROW_TYPE), String("filename_prefix", "eval/metrics", path_in="output"),
              String("x_metric", "clip_score", tooltip="metric on the x axis; empty: the swept value"),
              String("y_metric", "fid", tooltip="metric on the y axis")]
    outputs = [Output("IMAGE", "plot")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        if widgets.get("y_metric") is not None and not widgets["y_metric"].strip():
            return "y_metric: name the metric to plot (clip_score, pick_score, aesthetic_score, fid)"
        return None

    def run(self, ctx: Context, *, rows: list[EvalRow], filename_prefix: list[str], x_metric: list[str],
            y_metric: list[str]) -> Result:
        if not rows:
            raise ValueError("rows: no rows arrived (the list feeding MetricsTable is empty)")
        sweeps = sorted({row.sweep for row in rows})
        if len(sweeps) != 1:
            raise ValueError(f"rows: the rows come from {len(sweeps)} different sweeps ({', '.join(sweeps)}); "
                             f"one table plots one swept input")
        sweep, x_name, y_name = sweeps[0], x_metric[0].strip(), y_metric[0].strip()
        summary = summarise(rows)
        figure = draw(plot_points(summary, sweep, x_name, y_name), x_name or sweep, y_name,
                      f"{y_name} vs {x_name or sweep} across {sweep} ({len(rows)} rows)")
        points = drawn_points(figure)
        image = render(figure)
        target = save_target(filename_prefix[0], ctx.folders.directory_for("output"), image.shape[2], image.shape[1])
        stem = f"{target.filename}_{target.counter:05}_"
        (target.folder / f"{stem}.csv").write_text(csv_text(rows), encoding="utf-8")
        report = {"sweep": sweep, "rows": [row.record() for row in rows], "summary": summary,
                  "plot": {"x": x_name or sweep, "y": y_name,
                           "points": [{"label": f"{sweep}={entry[sweep]}", "x": x, "y": y}
                                      for entry, (x, y) in zip(summary, points)]}}
        (target.folder / f"{stem}.json").write_text(json.dumps(report, indent=1, allow_nan=False), encoding="utf-8")
        tensor_to_pil(image[0]).save(target.folder / f"{stem}.png")
        shown = {"filename": f"{stem}.png", "subfolder": target.subfolder, "type": "output"}
        return Result(outputs=(image,), ui={"images": [shown]})


NODES: list[type[Node]] = [MetricsTable]
