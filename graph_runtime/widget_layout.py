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

from dataclasses import dataclass
from typing import Any

from graph_runtime.context import HookContext
from graph_runtime.node import InputSpec, Node

CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize", "increment-wrap"})
SEED_NAMES = frozenset({"seed", "noise_seed"})
MISSING = object()  # a slot past the end of the saved values


def widget_specs(cls: type[Node]) -> list[InputSpec]:
    """The inputs that have an editor widget, in the order the editor creates them: required
    inputs first, then optional ones (as /object_info lists them)."""
    specs = [s for s in cls.inputs if not s.hidden and s.is_widget]
    return [s for s in specs if not s.optional] + [s for s in specs if s.optional]


@dataclass(frozen=True)
class WidgetSlot:
    """One value widget in a saved layout. ``controlled``: it may be followed by a control value
    whatever its declaration (a PrimitiveNode's value); ``upload_after``: the upload button's slot
    may follow it (the last required widget of a node with an upload input)."""

    spec: InputSpec
    controlled: bool = False
    upload_after: bool = False


def node_slots(cls: type[Node], skip: frozenset[str] = frozenset()) -> list[WidgetSlot]:
    """The widget slots of a node of ``cls`` in saved order, leaving out the inputs in ``skip``."""
    specs = widget_specs(cls)
    required = [s for s in specs if not s.optional]
    upload = any(has_upload(s) for s in specs)
    return [WidgetSlot(s, upload_after=upload and bool(required) and s is required[-1])
            for s in specs if s.name not in skip]


def read_slots(values: list[Any], slots: list[WidgetSlot], ctx: HookContext) -> list[Any]:
    """The value of each slot in ``values`` (``MISSING`` past their end), stepping over the
    frontend-only slots that follow it when they are there (see the module docstring)."""
    read: list[Any] = []
    position = 0
    for index, slot in enumerate(slots):
        read.append(values[position] if position < len(values) else MISSING)
        position += 1
        following = slots[index + 1].spec if index + 1 < len(slots) else None
        later = len(slots) - index - 1  # value slots still to come
        if position < len(values) and has_control_slot(slot.spec, values[position], following, ctx,
                                                       controlled=slot.controlled):
            position += 1
            # A COMBO's control widget came with a filter text ("control_filter_list") until
            # frontends stopped saving it: present when the values outnumber the widgets left.
            if slot.spec.type == "COMBO" and position < len(values) and isinstance(values[position], str) \
                    and len(values) - position > later:
                position += 1
        # The upload button was appended to the required inputs ("upload"), so its slot follows
        # the last required widget; frontends since 1.5x no longer save it.
        if slot.upload_after and position < len(values) and isinstance(values[position], str) \
                and len(values) - position > later:
            position += 1
    return read


def widget_values(node: dict[str, Any], cls: type[Node], ctx: HookContext) -> dict[str, Any]:
    """A UI node's widget values by input name, read from what the editor saved (see the module
    docstring); a widget with no saved value gets its default, as the editor would create it."""
    specs = widget_specs(cls)
    named = node.get("widgets_values_named")  # frontends since 1.5x also save values by name
    saved = named if isinstance(named, dict) else node.get("widgets_values")
    if isinstance(saved, dict):
        return {s.name: saved[s.name] if s.name in saved else s.default for s in specs
                if s.name in saved or s.default is not None}
    slots = node_slots(cls)
    read = read_slots(saved if isinstance(saved, list) else [], slots, ctx)
    # A widget without a saved value: the editor would have created it with its default.
    return {slot.spec.name: slot.spec.default if value is MISSING else value
            for slot, value in zip(slots, read) if value is not MISSING or slot.spec.default is not None}


def has_upload(spec: InputSpec) -> bool:
    return any(key.endswith("_upload") and flag for key, flag in spec.options.items())


def has_control_slot(spec: InputSpec, value: Any, following: InputSpec | None, ctx: HookContext, *,
                     controlled: bool = False) -> bool:
    """Whether ``value``, saved after ``spec``'s, is its control_after_generate companion: a
    word ("fixed", "randomize", …) or, in files from 2023 (ComfyUI's default workflow among them),
    a boolean ("random seed after every gen")."""
    seed_like = controlled or spec.options.get("control_after_generate") or \
        (spec.type == "INT" and spec.name in SEED_NAMES)
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
