"""Where a UI node's widget values sit in its saved ``widgets_values``.

The editor saves one slot per widget it created, positionally, including frontend-only widgets:
a seed-like INT (declared ``control_after_generate``, or named seed/noise_seed) is followed by its
control value ("fixed", "randomize", …, or a boolean in 2023 files); a COMBO with a control also
had a ``control_filter_list`` text in older frontends; the upload button of an ``image_upload``
COMBO saved "image" after the last required widget (the ``Comfy.UploadImage`` extension appended
an ``upload`` input to ``required``). Frontends since 1.5x save neither of the last two, and write
``widgets_values_named`` beside the list. Used by ``ui_format`` and ``group_nodes``.
"""

from __future__ import annotations

from typing import Any

from graph_runtime.context import HookContext
from graph_runtime.node import InputSpec, Node

CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize", "increment-wrap"})
SEED_NAMES = frozenset({"seed", "noise_seed"})


def widget_specs(cls: type[Node]) -> list[InputSpec]:
    """The inputs that have an editor widget, in the order the editor creates them: required
    inputs first, then optional ones (as /object_info lists them)."""
    specs = [s for s in cls.inputs if not s.hidden and s.is_widget]
    return [s for s in specs if not s.optional] + [s for s in specs if s.optional]


def widget_values(node: dict[str, Any], cls: type[Node], ctx: HookContext) -> dict[str, Any]:
    """A UI node's widget values by input name, read from what the editor saved (see the module
    docstring); a widget with no saved value gets its default, as the editor would create it."""
    specs = widget_specs(cls)
    named = node.get("widgets_values_named")  # frontends since 1.5x also save values by name
    saved = named if isinstance(named, dict) else node.get("widgets_values")
    if isinstance(saved, dict):
        return {s.name: saved[s.name] if s.name in saved else s.default for s in specs
                if s.name in saved or s.default is not None}
    values = saved if isinstance(saved, list) else []
    result: dict[str, Any] = {}
    required = sum(1 for s in specs if not s.optional)
    upload = any(has_upload(s) for s in specs)
    position = 0
    for index, spec in enumerate(specs):
        if position < len(values):
            result[spec.name] = values[position]
        elif spec.default is not None:
            result[spec.name] = spec.default  # the editor would have created the widget with it
        position += 1
        following = specs[index + 1] if index + 1 < len(specs) else None
        later = len(specs) - index - 1  # value slots still to come
        if position < len(values) and has_control_slot(spec, values[position], following, ctx):
            position += 1
            # A COMBO's control widget came with a filter text ("control_filter_list") until
            # frontends stopped saving it: present when the values outnumber the widgets left.
            if spec.type == "COMBO" and position < len(values) and isinstance(values[position], str) \
                    and len(values) - position > later:
                position += 1
        # The upload button was appended to the required inputs ("upload"), so its slot follows
        # the last required widget; frontends since 1.5x no longer save it.
        if upload and index == required - 1 and position < len(values) and \
                isinstance(values[position], str) and len(values) - position > later:
            position += 1
    return result


def has_upload(spec: InputSpec) -> bool:
    return any(key.endswith("_upload") and flag for key, flag in spec.options.items())


def has_control_slot(spec: InputSpec, value: Any, following: InputSpec | None, ctx: HookContext) -> bool:
    """Whether ``value``, saved after ``spec``'s, is its control_after_generate companion: a
    word ("fixed", "randomize", …) or, in files from 2023 (ComfyUI's default workflow among them),
    a boolean ("random seed after every gen")."""
    seed_like = spec.options.get("control_after_generate") or (spec.type == "INT" and spec.name in SEED_NAMES)
    if isinstance(value, bool):
        return bool(seed_like) and spec.type == "INT" and (following is None or following.type != "BOOLEAN")
    if not isinstance(value, str) or value not in CONTROL_VALUES:
        return False
    if seed_like:
        return True
    # A file saved by a ComfyUI whose schema gave this number a control widget ours lacks: the
    # control value can only be this number's companion unless the next widget accepts it.
    if spec.type not in ("INT", "FLOAT"):
        return False
    return following is None or not (following.type == "STRING" or value in following.listed_choices(ctx)[0])
