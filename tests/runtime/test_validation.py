"""Whole-workflow validation: every error type, all at once, in ComfyUI's shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from graph_runtime import FolderPaths, HookContext, NodeRegistry, validate
from graph_runtime.validation import ValidationResult

# Validation without files to look at: an empty base folder.
NO_FILES = HookContext(FolderPaths(base=Path("/nonexistent-nodeloom-base")))


def check(prompt: dict[str, Any], registry: NodeRegistry, folders: FolderPaths | None = None) -> ValidationResult:
    return validate(prompt, registry, ctx=HookContext(folders) if folders else NO_FILES)


def errors(result: ValidationResult) -> list[tuple[str, str, str | None]]:
    return [(e.node_id, e.type, e.input_name) for e in result.node_errors]


def sink(source: str, index: int = 0) -> dict[str, Any]:
    return {"class_type": "Collect", "inputs": {"value": [source, index]}}


def test_valid_workflow_has_order_outputs_and_coerced_constants(registry: NodeRegistry) -> None:
    prompt = {"1": {"class_type": "Number", "inputs": {"value": "7"}},
              "2": {"class_type": "Scale", "inputs": {"x": ["1", 0], "factor": 2}},
              "3": sink("2"), "9": {"class_type": "Number", "inputs": {"value": 1}}}
    result = check(prompt, registry)
    assert result.ok and result.outputs == ["3"]
    assert result.order == ["1", "2", "3"]  # node 9 feeds no output
    assert result.constants["1"] == {"value": 7} and result.constants["2"] == {"factor": 2.0}
    assert result.to_comfy() == {"error": None, "node_errors": {}}


@pytest.mark.parametrize("node, kind, input_name, text", [
    ({"class_type": "Nope", "inputs": {}}, "missing_node_type", None, "'Nope' may not be installed"),
    ({"class_type": "Add", "inputs": {"a": ["1", 0]}}, "required_input_missing", "b", "Required input is missing"),
    ({"class_type": "Double", "inputs": {"x": ["42", 0]}}, "bad_linked_input", "x", "node 42, which is not in the workflow"),
    ({"class_type": "Double", "inputs": {"x": ["1", 3]}}, "bad_linked_input", "x", "Output index 3 out of range"),
    ({"class_type": "Double", "inputs": {"x": [1, "a"]}}, "bad_linked_input", "x", "must be a length-2 list"),
    ({"class_type": "Double", "inputs": {"x": ["t", 0]}}, "return_type_mismatch", "x", "received_type(STRING) mismatch input_type(INT)"),
    ({"class_type": "Double", "inputs": {"x": 5}}, "invalid_input_type", "x", "expects a link"),
    ({"class_type": "Number", "inputs": {"value": "many"}}, "invalid_input_type", "value", "Failed to convert"),
    ({"class_type": "Number", "inputs": {"value": -5000}}, "value_smaller_than_min", "value", "smaller than min of -1000"),
    ({"class_type": "Number", "inputs": {"value": 5000}}, "value_bigger_than_max", "value", "bigger than max of 1000"),
    ({"class_type": "Pick", "inputs": {"mode": "fourth", "flag": True}}, "value_not_in_list", "mode", "'fourth' not in ['first', 'second', 'third']"),
    ({"class_type": "Even", "inputs": {"value": 3}}, "custom_validation_failed", None, "value must be even, got 3"),
    ({"class_type": "BrokenCheck", "inputs": {"value": 3}}, "exception_during_validation", None, "ZeroDivisionError: validator bug"),
])
def test_each_error_type_names_node_class_and_input(registry: NodeRegistry, node: dict[str, Any], kind: str,
                                                     input_name: str | None, text: str) -> None:
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 1}},
              "t": {"class_type": "Text", "inputs": {"text": "x"}},
              "5": node, "6": sink("5")}
    result = check(prompt, registry)
    assert not result.ok
    found = [e for e in result.node_errors if e.node_id == "5"]
    assert [(e.type, e.input_name) for e in found] == [(kind, input_name)]
    assert found[0].class_type == node["class_type"]
    assert text in found[0].describe()
    body = result.to_comfy()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    entry = body["node_errors"]["5"]
    assert entry["class_type"] == node["class_type"] and entry["dependent_outputs"] == ["6"]
    error = entry["errors"][0]
    assert set(error) == {"type", "message", "details", "extra_info"} and error["type"] == kind
    if input_name:
        assert error["extra_info"]["input_name"] == input_name


def test_missing_model_file_names_the_folder_and_the_choices(registry: NodeRegistry, folders: FolderPaths) -> None:
    checkpoints = folders.models_roots[0] / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "tiny.safetensors").write_bytes(b"")
    prompt = {"1": {"class_type": "Checkpoint", "inputs": {"ckpt_name": "sdxl.safetensors"}}, "2": sink("1")}
    (error,) = check(prompt, registry, folders).node_errors
    assert error.type == "value_not_in_list" and error.input_name == "ckpt_name"
    assert "'checkpoints' models folder" in error.message
    assert str(checkpoints) in error.details and "tiny.safetensors" in error.details


def test_empty_models_folder_says_so(registry: NodeRegistry, folders: FolderPaths) -> None:
    prompt = {"1": {"class_type": "Checkpoint", "inputs": {"ckpt_name": "x.safetensors"}}, "2": sink("1")}
    (error,) = check(prompt, registry, folders).node_errors
    assert "the folder is empty" in error.details


def test_cycle_is_reported_on_every_node_in_it(registry: NodeRegistry) -> None:
    prompt = {"1": {"class_type": "Double", "inputs": {"x": ["2", 0]}},
              "2": {"class_type": "Double", "inputs": {"x": ["1", 0]}}, "3": sink("2")}
    result = check(prompt, registry)
    assert sorted(errors(result)) == [("1", "bad_linked_input", None), ("2", "bad_linked_input", None)]
    assert "cycle" in result.node_errors[0].message and result.order == []


def test_self_link(registry: NodeRegistry) -> None:
    prompt = {"1": {"class_type": "Double", "inputs": {"x": ["1", 0]}}, "2": sink("1")}
    assert ("1", "bad_linked_input", "x") in errors(check(prompt, registry))


def test_no_outputs(registry: NodeRegistry) -> None:
    result = check({"1": {"class_type": "Number", "inputs": {"value": 1}}}, registry)
    assert result.to_comfy()["error"]["type"] == "prompt_no_outputs"
    assert "Prompt has no outputs" in result.format()


def test_malformed_node_is_invalid_prompt(registry: NodeRegistry) -> None:
    result = check({"1": {"inputs": {}}, "2": {"class_type": "Number", "inputs": []}, "3": sink("9")}, registry)
    kinds = errors(result)
    assert ("1", "invalid_prompt", None) in kinds and ("2", "invalid_prompt", None) in kinds


def test_all_errors_reported_at_once_and_formatted_readably(registry: NodeRegistry) -> None:
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 99999}},
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0]}},
              "3": {"class_type": "Pick", "inputs": {"mode": "zzz", "flag": "maybe"}},
              "4": {"class_type": "Ghost", "inputs": {}},
              "5": sink("2"), "6": sink("3"), "7": sink("4")}
    result = check(prompt, registry)
    assert sorted(errors(result)) == sorted([
        ("1", "value_bigger_than_max", "value"), ("2", "required_input_missing", "b"),
        ("3", "value_not_in_list", "mode"), ("3", "invalid_input_type", "flag"),
        ("4", "missing_node_type", None)])
    text = result.format()
    assert text.startswith("5 errors in the workflow:")
    assert "node 2 (Add), input 'b': Required input is missing" in text
    assert set(result.to_comfy()["node_errors"]) == {"1", "2", "3", "4"}


def test_errors_outside_the_requested_outputs_are_ignored(registry: NodeRegistry) -> None:
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 1}}, "2": sink("1"),
              "3": {"class_type": "Number", "inputs": {"value": "bad"}}}
    assert check(prompt, registry).ok
    result = validate({**prompt, "4": sink("3")}, registry, ctx=NO_FILES, targets=["2"])
    assert result.ok and result.outputs == ["2"]
    missing = validate(prompt, registry, ctx=NO_FILES, targets=["77"])
    assert missing.to_comfy()["error"]["type"] == "invalid_prompt"


def test_optional_input_may_be_absent_and_widget_accepts_link(registry: NodeRegistry, tmp_path: Path) -> None:
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 1}},
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0], "offset": ["1", 0]}},
              "3": sink("2")}
    assert check(prompt, registry).ok


def test_error_bodies_are_strict_json_even_for_infinite_values(registry: NodeRegistry) -> None:
    import json

    prompt = {"1": {"class_type": "Number", "inputs": {"value": float("inf")}},
              "2": {"class_type": "Scale", "inputs": {"x": ["1", 0], "factor": float("nan")}}, "3": sink("2")}
    result = check(prompt, registry)
    assert {(e.node_id, e.type) for e in result.node_errors} == {("1", "invalid_input_type"), ("2", "invalid_input_type")}
    json.dumps(result.to_comfy(), allow_nan=False)  # what HTTP clients must be able to parse


# -- length limits and paths inside a folder -----------------------------------------------------

from graph_runtime import Node, Result, String  # noqa: E402
from graph_runtime.input_limits import InputLimits  # noqa: E402


class SaveLike(Node):
    output_node = True
    inputs = [String("filename_prefix", "x", path_in="output"), String("note", "", optional=True)]

    def run(self, ctx: Any, *, filename_prefix: str, note: str) -> Result:
        return Result()


@pytest.fixture
def save_registry() -> NodeRegistry:
    registry = NodeRegistry()
    registry.add_node(SaveLike)
    return registry


def test_oversized_identifiers_and_strings_are_refused_at_once(save_registry: NodeRegistry) -> None:
    import time

    huge = "A" * 10_000_000
    prompt = {"1": {"class_type": huge, "inputs": {}},
              "2": {"class_type": "SaveLike", "inputs": {"filename_prefix": huge, "note": "ok"}},
              "3": {"class_type": "SaveLike", "inputs": {"n" * 300: 1, "note": ["x" * 300, 0]}}}
    started = time.perf_counter()
    result = validate(prompt, save_registry, ctx=NO_FILES, limits=InputLimits())
    assert time.perf_counter() - started < 0.05
    assert errors(result) == [("1", "value_too_long", None), ("2", "value_too_long", "filename_prefix"),
                              ("3", "value_too_long", "n" * 64 + "… (300 characters)"),
                              ("3", "value_too_long", "note")]
    body = result.to_comfy()
    assert len(repr(body)) < 4000  # the error quotes the values' start only
    first = body["node_errors"]["1"]
    assert first["class_type"].startswith("AAAA") and first["class_type"].endswith("(10000000 characters)")
    assert first["errors"][0]["message"] == "class_type is too long: 10000000 characters, at most 256"
    assert body["node_errors"]["2"]["errors"][0]["extra_info"] == {
        "received_length": 10_000_000, "max_length": 256 << 10, "input_name": "filename_prefix"}
    # Unchecked without limits (headless runs), and fine within them.
    unchecked = {"2": {"class_type": "SaveLike", "inputs": {"filename_prefix": "x", "note": huge}}}
    assert validate(unchecked, save_registry, ctx=NO_FILES).ok
    assert validate({"2": {"class_type": "SaveLike", "inputs": {"filename_prefix": "a", "note": "n" * 1000}}},
                    save_registry,
                    ctx=NO_FILES, limits=InputLimits()).ok


def test_an_overlong_node_id_is_a_prompt_error(save_registry: NodeRegistry) -> None:
    result = validate({"9" * 1000: {"class_type": "SaveLike", "inputs": {}}}, save_registry, ctx=NO_FILES,
                      limits=InputLimits())
    assert not result.ok and result.node_errors == []
    assert result.prompt_error["message"] == "node id is too long: 1000 characters, at most 256"


@pytest.mark.parametrize("prefix, ok", [
    ("ComfyUI", True), ("renders/cat", True), ("a/../b", True), ("%date:yyyy-MM-dd%/x", True),
    ("../escape", False), ("a/../../escape", False), ("/etc/passwd", False), ("", False), ("renders/", True),
    ("..", False), ("bad\x00name", False), ("n" * 256, False), ("linked/out", False), ("loop/x", False),
    ("d/" * 1000 + "x", False), ("C:/escape", False), ("a\\..\\..\\escape", False), ("caf\udce9", False),
])
def test_a_path_input_must_stay_inside_its_folder(save_registry: NodeRegistry, tmp_path: Path, prefix: str,
                                                  ok: bool) -> None:
    folders = FolderPaths(base=tmp_path)
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "linked").symlink_to(tmp_path)
    (tmp_path / "output" / "loop").symlink_to(tmp_path / "output" / "loop")
    result = validate({"1": {"class_type": "SaveLike", "inputs": {"filename_prefix": prefix}}}, save_registry,
                      ctx=HookContext(folders))
    assert result.ok is ok, result.format()
    if not ok:
        assert errors(result) == [("1", "invalid_input_value", "filename_prefix")]
        assert "Path is not inside the output folder" in result.format()


def test_runnable_outputs_are_those_with_no_error_upstream(registry: NodeRegistry) -> None:
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 3}}, "2": sink("1"),
              "3": {"class_type": "Number", "inputs": {"value": "three"}}, "4": sink("3"),
              "5": {"class_type": "Scale", "inputs": {"x": ["1", 0], "factor": 2}}, "6": sink("5"),
              "7": {"class_type": "Scale", "inputs": {"x": ["3", 0], "factor": 2}}, "8": sink("7")}
    result = check(prompt, registry)
    assert not result.ok and result.runnable_outputs() == ["2", "6"]
    assert result.comfy_node_errors()["3"]["dependent_outputs"] == ["4", "8"]
    assert validate(prompt, registry, ctx=NO_FILES, targets=["2", "6"]).ok


def test_nothing_runs_beside_an_unknown_node_type_or_without_a_valid_output(registry: NodeRegistry) -> None:
    unknown = {"1": {"class_type": "Number", "inputs": {"value": 3}}, "2": sink("1"),
               "3": {"class_type": "NoSuchNode", "inputs": {}}}
    assert check(unknown, registry).runnable_outputs() == []
    all_bad = {"1": {"class_type": "Number", "inputs": {"value": "x"}}, "2": sink("1")}
    assert check(all_bad, registry).runnable_outputs() == []


def test_a_large_prompt_with_many_errors_and_outputs_gets_its_body_in_one_pass(registry: NodeRegistry) -> None:
    # a 3000-node chain with an error at its head and an output on every link, plus 300 broken
    # nodes each with its own output: each error's dependent_outputs come from one search (built
    # per error and output, this body took minutes)
    prompt: dict[str, Any] = {"c0": {"class_type": "Number", "inputs": {"value": "not a number"}}}
    for i in range(1, 3000):
        prompt[f"c{i}"] = {"class_type": "Double", "inputs": {"x": [f"c{i - 1}", 0]}}
        prompt[f"o{i}"] = sink(f"c{i}")
    for i in range(300):
        prompt[f"b{i}"] = {"class_type": "Double", "inputs": {"x": ["missing", 0]}}
        prompt[f"p{i}"] = sink(f"b{i}")
    body = check(prompt, registry).to_comfy()["node_errors"]
    assert len(body) == 301
    assert sorted(body["c0"]["dependent_outputs"]) == sorted(f"o{i}" for i in range(1, 3000))
    assert all(body[f"b{i}"]["dependent_outputs"] == [f"p{i}"] for i in range(300))


def test_a_long_cycle_is_reported_on_each_node_once(registry: NodeRegistry) -> None:
    prompt: dict[str, Any] = {str(i): {"class_type": "Double", "inputs": {"x": [str((i + 1) % 2000), 0]}}
                              for i in range(2000)}
    prompt["out"] = sink("0")
    result = check(prompt, registry)
    assert sorted(errors(result)) == sorted((str(i), "bad_linked_input", None) for i in range(2000))
    assert result.to_comfy()["node_errors"]["1999"]["dependent_outputs"] == ["out"]


def test_a_valid_prompt_of_thousands_of_outputs_on_one_chain_validates_in_one_search(registry: NodeRegistry) -> None:
    # the nodes the outputs need come from one search up from all outputs (one per output took
    # seconds for 5000 outputs on a 5000-node chain)
    prompt: dict[str, Any] = {"c0": {"class_type": "Number", "inputs": {"value": 1}}}
    for i in range(1, 5000):
        prompt[f"c{i}"] = {"class_type": "Double", "inputs": {"x": [f"c{i - 1}", 0]}}
        prompt[f"o{i}"] = sink(f"c{i}")
    result = check(prompt, registry)
    assert result.ok and len(result.order) == 9999 and result.order[0] == "c0"
