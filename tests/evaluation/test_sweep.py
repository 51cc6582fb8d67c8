"""SweepValues: values x prompts, value-major, each row naming prompt, value and seed; bad values
are validation errors naming the item."""

from __future__ import annotations

import pytest

from graph_runtime import HookContext
from graph_runtime.folders import FolderPaths
from nodes.evaluation.sweep import SweepValues, parse_values


def test_values_times_prompts_value_major_with_a_seed_per_prompt(make_ctx) -> None:
    value, prompt, seed, rows, count = SweepValues().run(
        make_ctx(), name=["guidance_scale"], values=["3, 7.5"], value_type=["FLOAT"], seed=[10],
        seed_mode=["per prompt"], prompts=["a", "b", "c"])
    assert count == 6 and value == [3.0, 3.0, 3.0, 7.5, 7.5, 7.5]
    assert prompt == ["a", "b", "c"] * 2 and seed == [10, 11, 12] * 2
    assert [(r.index, r.prompt, r.value, r.seed) for r in rows] == list(zip(range(6), prompt, value, seed))
    assert rows[4].record() == {"row": 4, "prompt": "b", "guidance_scale": 7.5, "seed": 11}


@pytest.mark.parametrize(("mode", "seeds"), [("fixed", [5, 5, 5, 5]), ("per row", [5, 6, 7, 8])])
def test_seed_modes(make_ctx, mode: str, seeds: list[int]) -> None:
    _, _, seed, _, _ = SweepValues().run(make_ctx(), name=["steps"], values=["4,8"], value_type=["INT"], seed=[5],
                                         seed_mode=[mode], prompts=["x", "y"])
    assert seed == seeds


def test_without_prompts_one_row_per_value(make_ctx) -> None:
    value, prompt, _, rows, _ = SweepValues().run(make_ctx(), name=["ckpt"], values=["a.safetensors, b.safetensors"],
                                                  value_type=["STRING"], seed=[0], seed_mode=["fixed"])
    assert value == ["a.safetensors", "b.safetensors"] and prompt == ["", ""] and len(rows) == 2


def test_bad_values_are_validation_errors_naming_the_item() -> None:
    ctx = HookContext(FolderPaths(base="."))
    assert SweepValues.validate_inputs(ctx, values="3, x", value_type="FLOAT") == "values: 'x' is not a valid FLOAT value"
    assert SweepValues.validate_inputs(ctx, values="4, 7.5", value_type="INT") == "values: '7.5' is not a valid INT value"
    assert SweepValues.validate_inputs(ctx, values="3, 3.0, 4", value_type="FLOAT") == "values: 3.0 given more than once"
    assert "at least one value" in SweepValues.validate_inputs(ctx, values=" , ", value_type="FLOAT")
    assert "give the swept input a name" in SweepValues.validate_inputs(ctx, name=" ", values="1")
    with pytest.raises(ValueError, match="'x' is not a valid FLOAT"):
        parse_values("1,x", "FLOAT")


@pytest.mark.parametrize("text", ["1.5, nan", "inf, 2", "1e999"])
def test_values_that_are_not_finite_numbers_are_validation_errors(text: str) -> None:
    error = SweepValues.validate_inputs(HookContext(FolderPaths(base=".")), values=text, value_type="FLOAT")
    assert error is not None and "is not a finite FLOAT value" in error


@pytest.mark.parametrize("name", ["seed", "prompt", "row", "rows", "file", "fid", "clip_score"])
def test_a_name_that_is_already_a_column_is_refused(make_ctx, name: str) -> None:
    # sweeping seeds as 'seed' wrote the row's own seed over the swept one in the table
    error = SweepValues.validate_inputs(HookContext(FolderPaths(base=".")), name=name, values="5, 6")
    assert error is not None and f"name: {name!r} is a column every row already has" in error
    with pytest.raises(ValueError, match=f"name: {name!r} is a column"):
        SweepValues().run(make_ctx(), name=[name], values=["5, 6"], value_type=["INT"], seed=[0],
                          seed_mode=["fixed"])
