"""Node declaration API.

A node is one small class: its inputs and outputs are declared once, as data, and from that single
declaration come validation, the ``/object_info`` schema and the docs.

    class ImageInvert(Node):
        category = "image"
        description = "Invert the colours of an image."
        inputs = [Link("image", "IMAGE")]
        outputs = [Output("IMAGE")]

        def run(self, ctx: Context, *, image):
            return (1.0 - image,)

``run`` receives every declared input as a keyword argument (optional inputs that were not given
arrive as ``None``, hidden inputs are filled by the runtime) and returns a tuple with one value per
output, or a :class:`Result` when it also has something to show (output nodes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from graph_runtime.context import Context, HookContext

WidgetKind = Literal["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"]
WIDGET_KINDS: frozenset[str] = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
HIDDEN_KINDS: frozenset[str] = frozenset({"PROMPT", "EXTRA_PNGINFO", "UNIQUE_ID", "DYNPROMPT"})
RESERVED_NAMES: frozenset[str] = frozenset({"ctx", "self"})

# A fixed list, or a callable given the run's HookContext (e.g. the files in a models folder).
Choices = Sequence[str] | Callable[["HookContext"], Sequence[str]]


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """One declared input. Use the helpers below (Link, Int, Float, String, Boolean, Combo, Hidden)."""

    name: str
    type: str
    optional: bool = False
    hidden: bool = False
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    round: float | bool | None = None
    multiline: bool = False
    choices: Choices | None = None
    lazy: bool = False
    force_input: bool = False
    tooltip: str | None = None
    # For COMBOs listing a models folder: its name, so a missing file's error names the folder.
    model_folder: str | None = None
    # Extra keys passed through to the schema as-is (control_after_generate, image_upload, …).
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_KINDS and not self.force_input

    def current_choices(self, ctx: HookContext) -> list[str]:
        """The COMBO's choices now; a computed list is evaluated against ``ctx`` (its folders)."""
        if self.choices is None:
            return []
        values = self.choices(ctx) if callable(self.choices) else self.choices
        return list(values)

    def listed_choices(self, ctx: HookContext) -> tuple[list[str], str | None]:
        """The COMBO's choices now, or ``[]`` and the reason when its choices callable raised
        ("choices could not be listed: ZeroDivisionError: division by zero")."""
        try:
            return self.current_choices(ctx), None
        except Exception as exc:  # noqa: BLE001 - a plugin's callable must not break a listing
            return [], f"choices could not be listed: {type(exc).__name__}: {exc}"

    def choices_error(self, ctx: HookContext) -> str | None:
        """Why this COMBO's computed choices cannot be listed in ``ctx`` (its callable raised),
        for validation to report on this input; None otherwise."""
        return self.listed_choices(ctx)[1] if self.type == "COMBO" and callable(self.choices) else None

    def schema(self, ctx: HookContext, *, choices: list[str] | None = None) -> list[Any]:
        """The ``[TYPE, {options}]`` pair ComfyUI's /object_info uses for this input; a COMBO
        lists ``choices``, by default those in ``ctx``'s folders (none when they cannot be listed)."""
        opts: dict[str, Any] = {}
        if self.default is not None:
            opts["default"] = self.default
        for key in ("min", "max", "step", "round"):
            value = getattr(self, key)
            if value is not None:
                opts[key] = value
        if self.multiline:
            opts["multiline"] = True
        if self.lazy:
            opts["lazy"] = True
        if self.force_input:
            opts["forceInput"] = True
        if self.tooltip:
            opts["tooltip"] = self.tooltip
        opts.update(self.options)
        if self.type == "COMBO":
            return [self.listed_choices(ctx)[0] if choices is None else choices, opts]
        return [self.type, opts] if opts else [self.type]


def Link(name: str, type: str, *, optional: bool = False, lazy: bool = False,
         tooltip: str | None = None, **options: Any) -> InputSpec:
    """An input fed by another node's output of link type ``type`` (IMAGE, MODEL, …). A Link of a
    widget type (INT, STRING, …) is a socket only, like ComfyUI's ``forceInput``."""
    return InputSpec(name=name, type=type, optional=optional, lazy=lazy, tooltip=tooltip,
                     force_input=type in WIDGET_KINDS, options=options)


def Int(name: str, default: int = 0, *, min: int | None = None, max: int | None = None,
        step: int | None = None, optional: bool = False, lazy: bool = False,
        force_input: bool = False, tooltip: str | None = None,
        control_after_generate: bool = False, **options: Any) -> InputSpec:
    if control_after_generate:
        options["control_after_generate"] = True
    return InputSpec(name=name, type="INT", default=default, min=min, max=max, step=step,
                     optional=optional, lazy=lazy, force_input=force_input, tooltip=tooltip,
                     options=options)


def Float(name: str, default: float = 0.0, *, min: float | None = None,
          max: float | None = None, step: float | None = None, round: float | bool | None = None,
          optional: bool = False, lazy: bool = False, force_input: bool = False,
          tooltip: str | None = None, **options: Any) -> InputSpec:
    return InputSpec(name=name, type="FLOAT", default=default, min=min, max=max, step=step,
                     round=round, optional=optional, lazy=lazy, force_input=force_input,
                     tooltip=tooltip, options=options)


def String(name: str, default: str = "", *, multiline: bool = False, optional: bool = False,
           lazy: bool = False, force_input: bool = False, tooltip: str | None = None,
           **options: Any) -> InputSpec:
    return InputSpec(name=name, type="STRING", default=default, multiline=multiline,
                     optional=optional, lazy=lazy, force_input=force_input, tooltip=tooltip,
                     options=options)


def Boolean(name: str, default: bool = False, *, optional: bool = False, lazy: bool = False,
            tooltip: str | None = None, **options: Any) -> InputSpec:
    return InputSpec(name=name, type="BOOLEAN", default=default, optional=optional, lazy=lazy,
                     tooltip=tooltip, options=options)


def Combo(name: str, choices: Choices, *, default: str | None = None, optional: bool = False,
          lazy: bool = False, tooltip: str | None = None, **options: Any) -> InputSpec:
    """A choice among strings; ``choices`` may be a callable ``(ctx: HookContext) -> list[str]``
    evaluated on every schema/validation (e.g. the files currently in the run's input folder)."""
    return InputSpec(name=name, type="COMBO", choices=choices, default=default,
                     optional=optional, lazy=lazy, tooltip=tooltip, options=options)


def ModelFile(name: str, folder: str, *, optional: bool = False, tooltip: str | None = None,
              **options: Any) -> InputSpec:
    """A COMBO of the model files currently present in a models folder ("checkpoints", …) of the
    run's folders (``ctx.folders``)."""
    return InputSpec(name=name, type="COMBO", choices=lambda ctx: ctx.folders.list_models(folder),
                     model_folder=folder, optional=optional, tooltip=tooltip, options=options)


def Hidden(name: str, kind: str) -> InputSpec:
    """A value the runtime supplies: PROMPT (the API workflow), EXTRA_PNGINFO (extra_data's
    metadata, e.g. the UI workflow), UNIQUE_ID (this node's id), DYNPROMPT."""
    assert kind in HIDDEN_KINDS, f"hidden input kind must be one of {sorted(HIDDEN_KINDS)}, got {kind!r}"
    return InputSpec(name=name, type=kind, hidden=True)


@dataclass(frozen=True)
class Output:
    type: str
    name: str | None = None
    is_list: bool = False
    tooltip: str | None = None

    @property
    def display_name(self) -> str:
        return self.name or self.type


@dataclass
class Result:
    """What an output node returns: its outputs (possibly none) and the ``ui`` payload that
    ComfyUI clients display (``{"images": [{"filename", "subfolder", "type"}]}``)."""

    outputs: tuple[Any, ...] = ()
    ui: dict[str, Any] | None = None


class NodeDefinitionError(TypeError):
    """A node class is declared wrongly; raised when the class is defined."""


class Node:
    """Base class of every node. Subclasses declare the ClassVars below and implement ``run``."""

    inputs: ClassVar[Sequence[InputSpec]] = ()
    outputs: ClassVar[Sequence[Output]] = ()
    category: ClassVar[str] = "misc"
    display_name: ClassVar[str | None] = None
    description: ClassVar[str] = ""
    output_node: ClassVar[bool] = False
    # Receive every input as the whole list instead of being mapped over list items.
    input_is_list: ClassVar[bool] = False
    # Training and other long jobs: the server may schedule them apart and clients show them so.
    long_running: ClassVar[bool] = False
    # Re-run even when the inputs are unchanged (random sources, clocks).
    not_idempotent: ClassVar[bool] = False
    deprecated: ClassVar[bool] = False
    experimental: ClassVar[bool] = False
    # Set by the registry: the plugin (and module) that registered the class.
    python_module: ClassVar[str] = "nodes"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        from graph_runtime.node_checks import check_definition

        check_definition(cls)

    # -- hooks a node may override -------------------------------------------------------------

    def run(self, ctx: Context, **inputs: Any) -> tuple[Any, ...] | Result:
        raise TypeError(f"node {type(self).__name__} declares no run() method")

    @classmethod
    def fingerprint(cls, ctx: HookContext, **widgets: Any) -> Any:
        """Something that changes when the node's external input changes (a file's mtime and
        size, say). Called before every run with the run's context (its folders) and the widget
        values; the result joins the cache key. ``None`` (default) means: nothing outside the
        inputs matters."""
        return None

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        """Extra checks on widget values, run at validation time against the run's context (its
        folders). Return an error message, or None when valid."""
        return None

    def check_lazy(self, ctx: Context, **available: Any) -> list[str]:
        """Names of the lazy inputs still needed, given the inputs evaluated so far (lazy inputs
        not yet evaluated arrive as None). Default: every lazy input that is linked."""
        return [name for name, value in available.items()
                if value is None and name in type(self).lazy_input_names()]

    # -- derived from the declaration ----------------------------------------------------------

    @classmethod
    def input_spec(cls, name: str) -> InputSpec | None:
        return cls._specs_by_name().get(name)

    @classmethod
    def _specs_by_name(cls) -> dict[str, InputSpec]:
        cached = cls.__dict__.get("_spec_index")
        if cached is None:
            cached = {spec.name: spec for spec in cls.inputs}
            cls._spec_index = cached  # type: ignore[attr-defined]
        return cached

    @classmethod
    def lazy_input_names(cls) -> frozenset[str]:
        return frozenset(spec.name for spec in cls.inputs if spec.lazy)

    @classmethod
    def title(cls) -> str:
        return cls.display_name or cls.__name__
