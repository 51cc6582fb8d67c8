"""LoadPromptSet: the three formats, references, and errors that name the file and line."""

from __future__ import annotations

import json

import pytest
import torch

from graph_runtime import HookContext
from graph_runtime.folders import FolderPaths
from nodes.evaluation.prompt_set import LoadPromptSet, PromptItem, PromptSetError, parse_prompt_set, read_prompt_set


def test_the_three_formats_give_the_same_items() -> None:
    txt = "# a comment\na red mug\n\n  a blue car  \n"
    jsonl = '{"prompt": "a red mug"}\n\n{"prompt": "a blue car", "reference": "car.png"}\n'
    csv_text = "prompt,reference\na red mug,\n\"a blue car, parked\",car.png\n"
    assert parse_prompt_set("p.txt", txt) == [PromptItem("a red mug"), PromptItem("a blue car")]
    assert parse_prompt_set("p.jsonl", jsonl) == [PromptItem("a red mug"), PromptItem("a blue car", "car.png")]
    assert parse_prompt_set("p.csv", csv_text) == [PromptItem("a red mug"), PromptItem("a blue car, parked", "car.png")]


@pytest.mark.parametrize(("name", "text", "message"), [
    ("p.jsonl", '{"prompt": "ok"}\n{"prompt": ""}\n', "p.jsonl, line 2: expected an object"),
    ("p.jsonl", '{"prompt": "ok"}\nnot json\n', "p.jsonl, line 2: not JSON"),
    ("p.csv", "text\nhello\n", "p.csv: the header row has no 'prompt' column"),
    ("p.csv", "prompt\nfine\n\"\"\n", "p.csv, line 3: empty prompt"),
    ("p.txt", "# only a comment\n", "p.txt: holds no prompt"),
    ("p.yaml", "prompt: x", "unknown prompt set format '.yaml'"),
    ("p.csv", "prompt,reference\nfine,\na cat, on a mat,\n", "p.csv, line 3: 3 fields but the header has 2 columns"),
    ("p.csv", "prompt\nfine\n\"a cat\nb dog\n", "p.csv, line 3: not valid CSV \\(unexpected end of data\\)"),
    pytest.param("p.csv", "prompt\n\"" + "x" * 200_000 + "\"\n", "p.csv, line 2: not valid CSV \\(field larger than",
                 id="csv-field-over-the-limit"),
])
def test_bad_files_are_named_with_their_line(name: str, text: str, message: str) -> None:
    with pytest.raises(PromptSetError, match=message):
        parse_prompt_set(name, text)


def test_validation_names_a_missing_reference_or_file(tmp_path) -> None:
    folders = FolderPaths(base=tmp_path)
    folders.input_dir.mkdir()
    (folders.input_dir / "set.jsonl").write_text(json.dumps({"prompt": "a", "reference": "gone.png"}) + "\n")
    error = LoadPromptSet.validate_inputs(HookContext(folders), file="set.jsonl")
    assert "set.jsonl, prompt 1: reference image 'gone.png' not found in the input folder" in error
    assert "not found in the input folder" in LoadPromptSet.validate_inputs(HookContext(folders), file="nope.txt")


def test_the_example_prompt_set_loads_its_four_references(make_ctx) -> None:
    ctx = make_ctx()
    prompts, references, count = LoadPromptSet().run(ctx, file="nodeloom_eval_prompts.jsonl", limit=0)
    assert count == 4 and len(prompts) == 4 and len(references) == 4
    assert all(r.ndim == 4 and r.shape[0] == 1 and r.shape[-1] == 3 and r.dtype == torch.float32 for r in references)
    assert references[3].shape[1:3] == (512, 512)  # the astronaut photograph, read at its size
    assert LoadPromptSet().run(ctx, file="nodeloom_eval_prompts.jsonl", limit=2)[2] == 2


@pytest.mark.parametrize(("name", "text"), [
    ("bom.csv", "prompt,reference\na red mug,\n"),
    ("bom.jsonl", '{"prompt": "a red mug"}\n'),
    ("bom.txt", "a red mug\n"),
])
def test_a_byte_order_mark_is_not_part_of_the_first_column_or_prompt(tmp_path, name: str, text: str) -> None:
    folders = FolderPaths(base=tmp_path)
    folders.input_dir.mkdir()
    (folders.input_dir / name).write_bytes(b"\xef\xbb\xbf" + text.encode())  # as Excel saves "CSV UTF-8"
    assert LoadPromptSet.validate_inputs(HookContext(folders), file=name) is None
    assert read_prompt_set(HookContext(folders), name) == [PromptItem("a red mug")]
