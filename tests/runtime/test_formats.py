"""Workflow documents: API format, its wrappers, overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graph_runtime import FolderPaths, HookContext, NodeRegistry, parse_workflow
from graph_runtime.formats import WorkflowFormatError, apply_overrides, is_link, load_workflow_file

API = {"3": {"class_type": "Number", "inputs": {"value": 1}, "_meta": {"title": "Seed"}},
       6: {"class_type": "Collect", "inputs": {"value": [3, 0]}}}


def test_api_format_ids_become_strings_also_in_links() -> None:
    workflow = parse_workflow(API)
    assert workflow.prompt["6"]["inputs"]["value"] == ["3", 0] and workflow.extra_data == {}
    assert workflow.prompt["3"]["_meta"] == {"title": "Seed"}


def test_prompt_wrapper_with_extra_data() -> None:
    ui = {"nodes": [], "links": []}
    workflow = parse_workflow({"prompt": API, "extra_data": {"extra_pnginfo": {"workflow": ui}}, "client_id": "x"})
    assert set(workflow.prompt) == {"3", "6"} and workflow.ui_workflow == ui


@pytest.mark.parametrize("document", [[1, 2], {"a": 1}, "text", {"prompt": {}, "extra_data": 3}])
def test_not_a_workflow(document: object) -> None:
    with pytest.raises(WorkflowFormatError):
        parse_workflow(document)


@pytest.mark.parametrize("pnginfo, named", [
    ("a string", "must be an object"), ([1, 2], "must be an object"), ({"": 1}, "key ''"),
    ({"k" * 80: 1}, "1 to 79"), ({"工作流": 1}, "Latin-1"), ({"work\x00flow": 1}, "without NUL"),
])
def test_extra_pnginfo_that_cannot_become_png_chunks_is_refused(pnginfo: object, named: str) -> None:
    """SaveImage writes one text chunk per extra_pnginfo key: a value that is no object failed the
    run at SaveImage, an empty key was dropped and a NUL cut the keyword (the JSON after it lost)."""
    with pytest.raises(WorkflowFormatError, match=named):
        parse_workflow({"prompt": API, "extra_data": {"extra_pnginfo": pnginfo}})
    assert parse_workflow({"prompt": API, "extra_data": {"extra_pnginfo": {"k" * 79: 1, "Größe": 2}}})


def test_load_file_reports_bad_json_with_the_path(tmp_path: Path, registry: NodeRegistry) -> None:
    path = tmp_path / "w.json"
    path.write_text("{oops")
    with pytest.raises(WorkflowFormatError, match="not valid JSON") as info:
        load_workflow_file(path, registry, ctx=HookContext(FolderPaths(base=tmp_path)))
    assert str(path) in str(info.value)
    path.write_text(json.dumps({"prompt": API}))
    assert load_workflow_file(path, registry, ctx=HookContext(FolderPaths(base=tmp_path))).prompt["6"]["class_type"] == "Collect"


def test_overrides_parse_json_or_keep_strings() -> None:
    prompt = parse_workflow(API).prompt
    result = apply_overrides(prompt, ["3.value=42", '6.text="a red mug"', "6.label=plain words", "3.flag=true"])
    assert result["3"]["inputs"] == {"value": 42, "flag": True}
    assert result["6"]["inputs"]["text"] == "a red mug" and result["6"]["inputs"]["label"] == "plain words"
    assert prompt["3"]["inputs"] == {"value": 1}  # the original is untouched


@pytest.mark.parametrize("bad, message", [("3value=1", "NODE.INPUT=VALUE"), ("3.value", "NODE.INPUT=VALUE"),
                                          ("9.value=1", "no node '9'")])
def test_bad_overrides(bad: str, message: str) -> None:
    with pytest.raises(WorkflowFormatError, match=message):
        apply_overrides(parse_workflow(API).prompt, [bad])


def test_is_link() -> None:
    assert is_link(["1", 0]) and is_link([1, 2])
    assert not is_link(["1", True]) and not is_link([True, 0]) and not is_link(["a", "b"]) and not is_link([1, 2, 3])
