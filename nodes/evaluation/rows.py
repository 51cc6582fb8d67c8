"""One row of an evaluation: which prompt, which value of the swept input and which seed made an
image, and the metrics measured on it. Rows travel through the graph as ``EVAL_ROW`` links, one
per list item (ComfyUI's list semantics): metric nodes add to them, MetricsTable gathers them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

ROW_TYPE = "EVAL_ROW"
DEFAULT_SWEEP = "value"
# the columns every record has, the summary's row count, SaveImageSet's file column and the metric
# nodes' columns: a swept input named like one would overwrite it (or be overwritten) in the table
RESERVED_NAMES = ("row", "prompt", "seed", "rows", "file", "clip_score", "pick_score", "aesthetic_score", "fid")


@dataclass(frozen=True)
class EvalRow:
    """``index`` counts rows from 0 in the order SweepValues made them; ``sweep`` names the swept
    input (``guidance_scale``) and ``value`` is its value in this row; ``metrics`` maps a metric's
    name (``clip_score``, ``fid``) to its value."""

    index: int
    prompt: str
    seed: int | None = None
    sweep: str = DEFAULT_SWEEP
    value: Any = None
    metrics: Mapping[str, float] = field(default_factory=dict)

    def with_metric(self, name: str, value: float) -> EvalRow:
        return replace(self, metrics={**self.metrics, name: float(value)})

    def record(self) -> dict[str, Any]:
        """The row as a flat table record: row, prompt, <sweep>, seed, then the metrics."""
        record: dict[str, Any] = {"row": self.index, "prompt": self.prompt, self.sweep: self.value,
                                  "seed": self.seed}
        return record | {name: _finite_or_none(value) for name, value in self.metrics.items()}


def _finite_or_none(value: float) -> float | None:
    # JSON has no NaN: an undefined metric (FID of a one-image group) is written as null
    return value if math.isfinite(value) else None


def row_or_new(row: EvalRow | None, prompt: str) -> EvalRow:
    """The given row, or a fresh one for ``prompt`` when a metric node is used without a sweep."""
    return row if row is not None else EvalRow(index=0, prompt=prompt)
