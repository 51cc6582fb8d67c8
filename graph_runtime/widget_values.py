"""Widget values in validation: coercion to the declared type ("42" → 42 for an INT), COMBO
choices, min/max, and how a received value is quoted in an error."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from graph_runtime.context import HookContext
from graph_runtime.input_limits import quote
from graph_runtime.node import InputSpec

# A STRING option naming the folder (input, output, temp) its value is a path inside: a
# filename_prefix is String("filename_prefix", …, path_in="output"). It travels in /object_info,
# so the server's schema stand-ins check it at submission.
PATH_IN = "path_in"
# Longest file or folder name most file systems take (ENAMETOOLONG beyond).
NAME_MAX = 255
# Longest path, and deepest sub-folder chain, a prefix may ask the saving node to create.
PATH_MAX = 4096
MAX_DEPTH = 32

# Returned by check_widget for a value that failed (its error is already reported).
INVALID = object()


def check_widget(spec: InputSpec, value: Any, fail: Any, *, ctx: HookContext, check_choices: bool = True) -> Any:
    """``value`` coerced to the widget's type and checked against its choices or range; on a
    problem ``fail(kind, spec, message, details, **extra)`` is called and INVALID returned."""
    kind = spec.type
    try:
        coerced = _coerce(kind, value)
    except (TypeError, ValueError, OverflowError):
        fail("invalid_input_type", spec, f"Failed to convert an input value to a {kind} value",
             f"{spec.name}, {_truncate(repr(value))}", received_value=short_value(value))
        return INVALID
    folder = spec.options.get(PATH_IN) if kind == "STRING" else None
    if isinstance(folder, str):
        root = ctx.folders.directory_for(folder)
        problem = path_problem(coerced, root)
        if problem is not None:
            fail("invalid_input_value", spec, f"Path is not inside the {folder} folder",
                 f"{spec.name}: {quote(coerced)} {problem} (folder {root})", received_value=short_value(coerced))
            return INVALID
    if kind == "COMBO" and check_choices:
        choices = spec.current_choices(ctx)
        if coerced not in choices:
            if spec.model_folder:
                folders = ctx.folders.describe_folder(spec.model_folder)
                message = f"File not found in the '{spec.model_folder}' models folder"
                details = (f"{spec.name}: {coerced!r} is not in {folders}; "
                           f"available: {choices if choices else 'none (the folder is empty)'}")
            else:
                message = "Value not in list"
                details = f"{spec.name}: {quote(coerced)!r} not in {choices}"
            fail("value_not_in_list", spec, message, details, received_value=coerced)
            return INVALID
        return coerced
    if kind in ("INT", "FLOAT"):
        if spec.min is not None and coerced < spec.min:
            fail("value_smaller_than_min", spec, f"Value {coerced} smaller than min of {spec.min}",
                 spec.name, received_value=coerced)
            return INVALID
        if spec.max is not None and coerced > spec.max:
            fail("value_bigger_than_max", spec, f"Value {coerced} bigger than max of {spec.max}",
                 spec.name, received_value=coerced)
            return INVALID
    return coerced


def path_problem(value: str, root: Path) -> str | None:
    """Why ``value``, a file path relative to ``root`` (as a filename_prefix: sub-folders allowed,
    ``..`` only while it stays inside), is refused; None when it is fine. Checked as the saving
    node resolves it, so a prefix that would fail at run time fails at submission instead."""
    normalised = os.path.normpath(value) if value else ""
    subfolder, name = os.path.split(normalised)
    if "\x00" in value:
        return "contains a NUL character"
    if "\\" in value or re.match(r"[A-Za-z]:", value):
        # /view serves neither, and on Windows they would name another folder or a drive.
        return "contains a backslash or a drive letter; use forward slashes and relative names"
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 text"
    if len(encoded) > PATH_MAX or normalised.count(os.sep) >= MAX_DEPTH:
        return f"is too long or too deep (at most {PATH_MAX} bytes and {MAX_DEPTH} folders)"
    if not name or name in (".", ".."):
        return "names no file; give a name such as 'ComfyUI' or 'renders/cat'"
    if os.path.isabs(normalised) or normalised.split(os.sep)[0] == "..":
        return "leaves the folder; use a name or a relative sub-folder path"
    if any(len(part.encode()) > NAME_MAX for part in normalised.split(os.sep)):
        return f"has a part longer than {NAME_MAX} bytes"
    try:
        base = root.resolve()
        folder = (base / subfolder).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, say
        return f"cannot be resolved ({exc})"
    if folder != base and base not in folder.parents:
        return "leaves the folder through a symbolic link"
    return None


def _coerce(kind: str, value: Any) -> Any:
    if kind == "INT":
        if isinstance(value, bool):
            raise TypeError("bool is not an INT")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError("not an integer")
            return int(value)
        return int(value) if isinstance(value, (int, str)) else _reject(value)
    if kind == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError("not a number")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError("not finite")
        return number
    if kind == "BOOLEAN":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return _reject(value)
    if kind in ("STRING", "COMBO"):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and kind == "STRING":
            return str(value)
        return value if isinstance(value, str) else _reject(value)
    raise TypeError(f"unknown widget type {kind}")


def _reject(value: Any) -> Any:
    raise TypeError(f"unexpected {type(value).__name__}")


def short_value(value: Any) -> Any:
    """The received value as error details carry it: strict JSON (no NaN/Infinity, which clients
    cannot parse), and short."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return _truncate(repr(value))
    return value if len(text) <= 200 else _truncate(text)


def _truncate(text: str) -> str:
    return text if len(text) <= 200 else text[:200] + "…"
