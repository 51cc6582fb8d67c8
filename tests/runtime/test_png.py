"""Workflows embedded in PNGs the way ComfyUI's SaveImage writes them."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from graph_runtime import FolderPaths, HookContext, NodeRegistry
from graph_runtime.formats import WorkflowFormatError, load_workflow_file
from graph_runtime.png import read_png_text, read_png_workflow, strict_json

DATA = Path(__file__).parent / "data" / "ui"
PROMPT = {"1": {"class_type": "Number", "inputs": {"value": 3}},
          "2": {"class_type": "Collect", "inputs": {"value": [1, 0]}}}


def save_png(path: Path, texts: dict[str, str], *, zip_keys: tuple[str, ...] = ()) -> Path:
    info = PngInfo()
    for key, text in texts.items():
        if key in zip_keys:
            info.add_itxt(key, text, zip=True)
        else:
            info.add_text(key, text)
    Image.new("RGB", (4, 4), (10, 20, 30)).save(path, pnginfo=info)
    return path


def test_prefers_the_api_prompt_and_keeps_the_ui_workflow(tmp_path: Path, registry: NodeRegistry) -> None:
    ui = json.loads((DATA / "blur_invert_v1.json").read_text())
    path = save_png(tmp_path / "out.png", {"prompt": json.dumps(PROMPT), "workflow": json.dumps(ui),
                                           "Software": "not json"})
    workflow = read_png_workflow(path, registry)
    assert workflow.prompt["2"]["inputs"]["value"] == ["1", 0]
    assert workflow.ui_workflow == ui
    assert workflow.extra_data == {"extra_pnginfo": {"workflow": ui}}


def test_ui_workflow_alone_is_converted(tmp_path: Path, ui_registry: NodeRegistry) -> None:
    ui = json.loads((DATA / "invert_and_scale_v04.json").read_text())
    path = save_png(tmp_path / "ui.png", {"workflow": json.dumps(ui)}, zip_keys=("workflow",))
    workflow = load_workflow_file(path, ui_registry, ctx=HookContext(FolderPaths(base=tmp_path)))  # .png dispatches to the PNG reader
    assert workflow.prompt["4"]["inputs"]["width"] == 768


def test_unicode_prompt_in_an_itxt_chunk(tmp_path: Path, registry: NodeRegistry) -> None:
    prompt = {"1": {"class_type": "Text", "inputs": {"text": "tasse rouge ☕ 赤いマグ"}},
              "2": {"class_type": "Collect", "inputs": {"value": ["1", 0]}}}
    path = save_png(tmp_path / "u.png", {"prompt": json.dumps(prompt, ensure_ascii=False)})
    assert read_png_workflow(path, registry).prompt["1"]["inputs"]["text"] == "tasse rouge ☕ 赤いマグ"


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_ztxt_chunks_are_read(tmp_path: Path) -> None:
    path = save_png(tmp_path / "z.png", {})
    data = path.read_bytes()
    body = b"prompt\x00\x00" + zlib.compress(json.dumps(PROMPT).encode())
    path.write_bytes(data[:33] + chunk(b"zTXt", body) + data[33:])  # right after IHDR
    assert json.loads(read_png_text(path)["prompt"]) == PROMPT


@pytest.mark.parametrize("content, message", [
    (b"GIF89a....", "not a PNG"),
    (None, "no workflow in this PNG"),
])
def test_errors_name_the_file(tmp_path: Path, content: Any, message: str) -> None:
    path = tmp_path / "bad.png"
    if content is None:
        save_png(path, {"Comment": "hello"})
    else:
        path.write_bytes(content)
    with pytest.raises(WorkflowFormatError, match=message) as info:
        read_png_workflow(path)
    assert str(path) in str(info.value)


def test_truncated_png_is_a_format_error(tmp_path: Path) -> None:
    path = save_png(tmp_path / "t.png", {"prompt": json.dumps(PROMPT)})
    data = path.read_bytes()
    path.write_bytes(data[:45])
    with pytest.raises(WorkflowFormatError, match="truncated"):
        read_png_text(path)


def test_bad_prompt_json_is_a_format_error(tmp_path: Path) -> None:
    path = save_png(tmp_path / "j.png", {"prompt": "{not json"})
    with pytest.raises(WorkflowFormatError, match="'prompt' chunk is not valid JSON"):
        read_png_workflow(path)


def test_strict_json_writes_non_finite_numbers_as_null_as_browsers_do() -> None:
    value = {"a": float("nan"), "b": [1.5, float("inf"), (float("-inf"), "NaN")], "c": {"d": 2}}
    text = strict_json(value)
    assert "NaN" not in text.replace('"NaN"', "") and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.5, None, [None, "NaN"]], "c": {"d": 2}}
    assert strict_json({"x": [1, "é"]}) == json.dumps({"x": [1, "é"]})
