"""SweepValues: one input swept over a list of values, through the runtime's list semantics.

Its outputs are lists (``is_list``), so every node downstream runs once per item: link ``value``
into KSampler's ``cfg`` and the sampler runs once per guidance scale. Linked to a prompt set, the
rows are the product values x prompts, value-major (all prompts at the first value, then the
next), and the ``prompt`` and ``seed`` outputs follow the same order, so CLIPTextEncode, KSampler
and the metric nodes stay aligned item by item, and every row names its prompt, value and seed.
"""

from __future__ import annotations

import math
from typing import Any

from graph_runtime import Combo, Context, HookContext, Int, Link, Node, Output, String
from nodes.evaluation.rows import RESERVED_NAMES, ROW_TYPE, EvalRow

VALUE_TYPES = ("FLOAT", "INT", "STRING")
# Same seed for a prompt at every value: the images differ by the swept value only (paired comparison).
SEED_MODES = ("per prompt", "fixed", "per row")


def parse_values(text: str, value_type: str) -> list[Any]:
    """Comma-separated ``text`` as a list of ``value_type`` values. Raises ValueError naming the
    item that is not one or a value given twice, or when the list is empty."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError("values: give at least one value, comma-separated (e.g. 3.0, 5.0, 7.5)")
    parse = {"FLOAT": float, "INT": int, "STRING": str}[value_type]
    values = []
    for item in items:
        try:
            value = parse(item)
        except ValueError:
            raise ValueError(f"values: {item!r} is not a valid {value_type} value") from None
        if isinstance(value, float) and not math.isfinite(value):  # float() takes nan, inf and 1e999
            raise ValueError(f"values: {item!r} is not a finite {value_type} value")
        values.append(value)
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:  # rows are grouped by value: a repeated value would merge two groups
        raise ValueError(f"values: {', '.join(repeated)} given more than once")
    return values


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot head the swept column, or None."""
    if not name.strip():
        return "name: give the swept input a name (it heads the table's column)"
    if name.strip() in RESERVED_NAMES:
        return (f"name: {name.strip()!r} is a column every row already has ({', '.join(RESERVED_NAMES)}); call the "
                f"swept input something else, e.g. 'swept_{name.strip()}'")
    return None


SEED_LIMIT = 1 << 64  # KSampler's seeds are 0 .. 2^64 - 1: offsets wrap around


def seed_of(mode: str, base: int, prompt_index: int, row_index: int) -> int:
    return (base + {"fixed": 0, "per prompt": prompt_index, "per row": row_index}[mode]) % SEED_LIMIT


def sweep_rows(name: str, values: list[Any], prompts: list[str], seed: int, seed_mode: str) -> list[EvalRow]:
    """The rows of ``values`` x ``prompts``, value-major; ``prompts`` may be empty (rows of values only,
    each with the prompt "")."""
    rows = []
    for value in values:
        for prompt_index, prompt in enumerate(prompts or [""]):
            index = len(rows)
            rows.append(EvalRow(index=index, prompt=prompt, seed=seed_of(seed_mode, seed, prompt_index, index),
                                sweep=name, value=value))
    return rows


class SweepValues(Node):
    category = "evaluation"
    display_name = "Sweep Values"
    description = ("Sweep one input over a list of values: the outputs are lists, so every node downstream runs once "
                   "per item (link value into KSampler's cfg to sweep guidance scales). With a prompt set linked, "
                   "the items are every value x every prompt, value-major, and prompt and seed follow them. "
                   "seed_mode: 'per prompt' gives a prompt the same seed (seed + prompt index) at every value, "
                   "'fixed' one seed for all, 'per row' seed + row index. rows name prompt, value and seed for "
                   "the metric nodes and MetricsTable.")
    input_is_list = True
    inputs = [String("name", "guidance_scale", tooltip="what is swept: the column name in the table"),
              String("values", "3.0, 5.0, 7.5", tooltip="comma-separated values"),
              Combo("value_type", VALUE_TYPES, default="FLOAT"),
              Int("seed", 0, min=0, max=SEED_LIMIT - 1),
              Combo("seed_mode", SEED_MODES, default="per prompt"),
              Link("prompts", "STRING", optional=True, tooltip="the prompts of a prompt set (LoadPromptSet)")]
    outputs = [Output("*", "value", is_list=True), Output("STRING", "prompt", is_list=True),
               Output("INT", "seed", is_list=True), Output(ROW_TYPE, "rows", is_list=True), Output("INT", "count")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        # **widgets, not named parameters: a named COMBO would no longer be checked against its list
        name, values = widgets.get("name"), widgets.get("values")
        if name is not None and (problem := name_problem(name)):
            return problem
        if values is None:
            return None
        try:
            parse_values(values, widgets.get("value_type") or "FLOAT")
        except ValueError as exc:
            return str(exc)
        return None

    def run(self, ctx: Context, *, name: list[str], values: list[str], value_type: list[str], seed: list[int],
            seed_mode: list[str], prompts: list[str] | None = None) -> tuple[Any, ...]:
        if len(name) > 1 or len(values) > 1 or len(seed) > 1:
            raise ValueError("name, values and seed take one value each; the list to sweep goes into 'values'")
        if problem := name_problem(name[0]):  # a linked name is known only now
            raise ValueError(problem)
        rows = sweep_rows(name[0].strip(), parse_values(values[0], value_type[0]), prompts or [], seed[0],
                          seed_mode[0])
        return [row.value for row in rows], [row.prompt for row in rows], [row.seed for row in rows], rows, len(rows)


NODES: list[type[Node]] = [SweepValues]
