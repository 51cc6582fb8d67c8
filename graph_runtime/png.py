"""Workflows embedded in PNG files, as ComfyUI's SaveImage writes them: a ``prompt`` text chunk
(API format) and a ``workflow`` chunk (UI format), plus any other extra_pnginfo keys.

Read with the standard library only (tEXt, zTXt and iTXt chunks) so graph_runtime needs no imaging
library.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graph_runtime.formats import Workflow, WorkflowFormatError, parse_workflow

if TYPE_CHECKING:
    from graph_runtime.context import HookContext
    from graph_runtime.registry import NodeRegistry

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Text chunks are small; a bound keeps a corrupt length field from allocating gigabytes.
MAX_TEXT_CHUNK = 64 << 20


def strict_json(value: Any) -> str:
    """``value`` as strict JSON (RFC 8259), the text of a PNG chunk a browser's ``JSON.parse``
    reads: NaN and ±Infinity, which Python's json writes as bare ``NaN``/``Infinity``, become
    ``null``, as JavaScript's ``JSON.stringify`` writes them. Other values are written as
    ``json.dumps`` does (ComfyUI's SaveImage)."""
    return json.dumps(_finite(value), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def read_png_text(path: Path) -> dict[str, str]:
    """The text chunks of a PNG, keyword → text (later chunks win on repeated keywords)."""
    data = Path(path).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise WorkflowFormatError(f"{path}: not a PNG file")
    texts: dict[str, str] = {}
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        if len(body) < length:
            raise WorkflowFormatError(f"{path}: truncated PNG (chunk {kind!r} at byte {offset})")
        offset += 12 + length
        if kind == b"IEND":
            break
        if kind in (b"tEXt", b"zTXt", b"iTXt") and length <= MAX_TEXT_CHUNK:
            try:
                keyword, text = _decode_text_chunk(kind, body)
            except (ValueError, zlib.error) as exc:
                raise WorkflowFormatError(f"{path}: unreadable {kind.decode()} chunk: {exc}") from exc
            texts[keyword] = text
    return texts


def _decode_text_chunk(kind: bytes, body: bytes) -> tuple[str, str]:
    keyword, sep, rest = body.partition(b"\x00")
    if not sep:
        raise ValueError("no keyword separator")
    name = keyword.decode("latin-1")
    if kind == b"tEXt":
        return name, rest.decode("latin-1")
    if kind == b"zTXt":
        return name, zlib.decompress(rest[1:]).decode("latin-1")
    # iTXt: compression flag, method, language tag\0, translated keyword\0, UTF-8 text.
    compressed = rest[:1] == b"\x01"
    _language, _, rest = rest[2:].partition(b"\x00")
    _translated, _, text = rest.partition(b"\x00")
    if compressed:
        text = zlib.decompress(text)
    return name, text.decode("utf-8")


def read_png_workflow(path: Path, registry: NodeRegistry | None = None, *,
                      ctx: HookContext | None = None) -> Workflow:
    """The workflow a PNG carries: the embedded API ``prompt`` when present (exactly what ran),
    else the UI ``workflow`` converted with the registry's schemas. Every other JSON text chunk
    (the UI workflow included) is kept in ``extra_data["extra_pnginfo"]`` so saving again embeds it."""
    texts = read_png_text(path)
    pnginfo: dict[str, Any] = {}
    for key, text in texts.items():
        if key == "prompt":
            continue
        try:
            pnginfo[key] = json.loads(text)
        except json.JSONDecodeError:
            continue  # ordinary text metadata (Software, Comment, …), not ours
    prompt_text = texts.get("prompt")
    ui = pnginfo.get("workflow") if isinstance(pnginfo.get("workflow"), dict) else None
    if prompt_text is not None:
        try:
            prompt = json.loads(prompt_text)
        except json.JSONDecodeError as exc:
            raise WorkflowFormatError(f"{path}: its 'prompt' chunk is not valid JSON ({exc})") from exc
        workflow = parse_workflow(prompt, registry, ctx=ctx)
    elif ui is not None:
        workflow = parse_workflow(ui, registry, ctx=ctx)
    else:
        raise WorkflowFormatError(f"{path}: no workflow in this PNG (no 'prompt' or 'workflow' text chunk)")
    workflow.extra_data = {**workflow.extra_data, "extra_pnginfo": pnginfo}
    workflow.ui_workflow = ui
    return workflow
