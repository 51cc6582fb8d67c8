"""LoadPromptSet: the prompts of an evaluation, from a text, JSONL or CSV file under input/.

Formats (UTF-8; a byte-order mark, as Excel writes, is dropped):

- ``.txt``: one prompt per line; blank lines and lines starting with ``#`` are skipped.
- ``.jsonl``: one JSON object per line with ``"prompt"`` and optionally ``"reference"`` (an image
  file under input/, e.g. the real photo the prompt describes: the reference set of an FID).
- ``.csv``: a header row with a ``prompt`` column and optionally a ``reference`` column; a line
  with more fields than the header (an unquoted comma) or an unclosed quote is an error.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graph_runtime import Combo, Context, HookContext, Int, Node, Output
from graph_runtime.folders import UnsafePath, safe_join
from nodes.core.image_io import max_image_pixels
from nodes.evaluation.image_sets import read_image

SUFFIXES = (".txt", ".jsonl", ".csv")


@dataclass(frozen=True)
class PromptItem:
    prompt: str
    reference: str | None = None


class PromptSetError(ValueError):
    """A prompt set file that cannot be read; the message names the file and the line."""


def parse_prompt_set(name: str, text: str) -> list[PromptItem]:
    """The items of a prompt set file called ``name`` (its suffix picks the format). Raises
    PromptSetError naming the file and line of the first problem, or when it holds no prompt."""
    suffix = Path(name).suffix.lower()
    if suffix == ".txt":
        items = [PromptItem(line.strip()) for line in text.splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]
    elif suffix == ".jsonl":
        items = [_json_item(name, number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    elif suffix == ".csv":
        items = _csv_items(name, text)
    else:
        raise PromptSetError(f"{name}: unknown prompt set format {suffix!r}; use {', '.join(SUFFIXES)}")
    if not items:
        raise PromptSetError(f"{name}: holds no prompt")
    return items


def _json_item(name: str, number: int, line: str) -> PromptItem:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        raise PromptSetError(f"{name}, line {number}: not JSON ({exc.msg})") from None
    if not isinstance(entry, dict) or not isinstance(entry.get("prompt"), str) or not entry["prompt"].strip():
        raise PromptSetError(f"{name}, line {number}: expected an object with a non-empty \"prompt\" string")
    reference = entry.get("reference")
    if reference is not None and not isinstance(reference, str):
        raise PromptSetError(f"{name}, line {number}: \"reference\" must be an image file name under input/")
    return PromptItem(entry["prompt"].strip(), reference or None)


def _csv_items(name: str, text: str) -> list[PromptItem]:
    # strict: an unclosed quote is an error, not the rest of the file read as one prompt
    reader = csv.DictReader(io.StringIO(text), strict=True)
    try:
        if "prompt" not in (reader.fieldnames or []):
            raise PromptSetError(f"{name}: the header row has no 'prompt' column (columns: {reader.fieldnames or []})")
        return [_csv_item(name, reader.line_num, row) for row in reader]
    except csv.Error as exc:  # also a field over csv's size limit
        # line_num is the last line of the last record read: the bad record starts on the next
        raise PromptSetError(f"{name}, line {reader.line_num + 1}: not valid CSV ({exc})") from None


def _csv_item(name: str, line: int, row: dict[str | None, Any]) -> PromptItem:
    extra = row.get(None)  # DictReader's key for the fields beyond the header's columns
    if extra is not None:  # an unquoted comma: the rest of the prompt would be dropped silently
        raise PromptSetError(f"{name}, line {line}: {len(row) - 1 + len(extra)} fields but the header has "
                             f"{len(row) - 1} columns; put a prompt that holds a comma in double quotes")
    prompt = (row.get("prompt") or "").strip()
    if not prompt:
        raise PromptSetError(f"{name}, line {line}: empty prompt")
    return PromptItem(prompt, (row.get("reference") or "").strip() or None)


def _prompt_files(ctx: HookContext) -> list[str]:
    root = ctx.folders.input_dir
    if root is None or not root.is_dir():
        return []
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in SUFFIXES)


def read_prompt_set(ctx: HookContext, file: str) -> list[PromptItem]:
    """Parse ``file`` of the input folder and check that its reference images exist. Raises
    PromptSetError, FileNotFoundError or UnsafePath naming the file."""
    root = ctx.folders.directory_for("input")
    path = safe_join(root, file)
    if not path.is_file():
        raise FileNotFoundError(f"prompt set {file!r} not found in the input folder {root}")
    try:
        # utf-8-sig: drops the byte-order mark Excel and Windows editors write, which would rename
        # the CSV's first column and break the first JSON line
        items = parse_prompt_set(file, path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise PromptSetError(f"{file}: not UTF-8 text") from None
    for number, item in enumerate(items, 1):
        if item.reference is not None and not safe_join(root, item.reference).is_file():
            raise PromptSetError(f"{file}, prompt {number}: reference image {item.reference!r} not found in "
                                 f"the input folder {root}")
    return items


class LoadPromptSet(Node):
    category = "evaluation"
    display_name = "Load Prompt Set"
    description = ("Load the prompts of an evaluation from a file under input/: .txt (one prompt a line), .jsonl "
                   "({\"prompt\", \"reference\"}) or .csv (prompt and reference columns). Outputs the prompts as a "
                   "list (downstream nodes run once per prompt, or link them into SweepValues), the reference "
                   "images of the prompts that name one (IMAGE [1, H, W, 3] each), and the number of prompts.")
    inputs = [Combo("file", _prompt_files, tooltip="a .txt, .jsonl or .csv file under input/"),
              Int("limit", 0, min=0, max=1_000_000, tooltip="use only the first N prompts (0: all)")]
    outputs = [Output("STRING", "prompts", is_list=True), Output("IMAGE", "references", is_list=True),
               Output("INT", "count")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, file: str | None = None, **_: Any) -> str | None:
        try:
            read_prompt_set(ctx, file or "")
        except (PromptSetError, FileNotFoundError, UnsafePath) as exc:
            return str(exc)
        return None

    @classmethod
    def fingerprint(cls, ctx: HookContext, file: str | None = None, **_: Any) -> Any:
        try:
            return hashlib.sha256(safe_join(ctx.folders.directory_for("input"), file or "").read_bytes()).hexdigest()
        except (OSError, UnsafePath):
            return None

    def run(self, ctx: Context, *, file: str, limit: int) -> tuple[Any, ...]:
        items = read_prompt_set(ctx, file)
        items = items[:limit] if limit else items
        root, budget = ctx.folders.directory_for("input"), max_image_pixels(ctx)
        references = [read_image(safe_join(root, item.reference), budget) for item in items if item.reference]
        return [item.prompt for item in items], references, len(items)


NODES: list[type[Node]] = [LoadPromptSet]
