"""Node schemas in the server process, which never imports the node packs (nor torch).

Workers report ``object_info``; from it we rebuild stand-in node classes carrying the same input
declarations, so graph_runtime's own validation runs here on submission with ComfyUI's error
shapes. What only the real class knows (``validate_inputs``) is checked again by the worker before
it runs. The last schemas are kept on disk, so a restarted server validates before its first worker
is up.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from graph_runtime.context import HookContext
from graph_runtime.folders import FolderPaths
from graph_runtime.formats import ApiPrompt
from graph_runtime.input_limits import InputLimits
from graph_runtime.node import HIDDEN_KINDS, InputSpec, Node, Output
from graph_runtime.registry import NodeRegistry
from graph_runtime.validation import ValidationResult, validate
from server.execution.messages import NodeSchemas

log = logging.getLogger(__name__)

_SPEC_KEYS = {"default": "default", "min": "min", "max": "max", "step": "step", "round": "round",
              "multiline": "multiline", "lazy": "lazy", "forceInput": "force_input", "tooltip": "tooltip"}


class SchemaCatalog:
    """The node schemas last reported by a worker, and validation against them with ``folders``
    (the server's own models, input and output folders)."""

    def __init__(self, folders: FolderPaths, cache_file: Path | None) -> None:
        self.folders = folders
        # What validation and UI-format conversion list choices from: the server's own folders.
        self.hook_context = HookContext(folders=folders)
        self.cache_file = cache_file
        self.object_info: dict[str, dict[str, Any]] = {}
        self.model_inputs: dict[str, dict[str, str]] = {}
        self.plugins: tuple[dict[str, Any], ...] = ()
        self.registry = NodeRegistry()
        self.loaded = False

    def load_cached(self) -> bool:
        if self.cache_file is None or not self.cache_file.is_file():
            return False
        try:
            self.update(NodeSchemas.from_dict(json.loads(self.cache_file.read_text())), persist=False)
        except (ValueError, KeyError, TypeError, OSError) as exc:
            log.warning("ignoring cached node schemas %s: %s", self.cache_file, exc)
            return False
        return True

    def update(self, schemas: NodeSchemas, *, persist: bool = True) -> None:
        registry = NodeRegistry()
        for name, schema in schemas.object_info.items():
            try:
                registry.add_node(_stand_in(name, schema, schemas.model_inputs.get(name, {}), self.folders))
            except Exception as exc:  # noqa: BLE001 - one odd schema must not hide the others
                log.warning("cannot rebuild schema of node %s: %s", name, exc)
        self.object_info = schemas.object_info
        self.model_inputs = schemas.model_inputs
        self.plugins = schemas.plugins
        self.registry = registry
        self.loaded = True
        if persist and self.cache_file is not None:
            try:
                self.cache_file.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.cache_file.with_suffix(".tmp")
                tmp.write_text(json.dumps(schemas.as_dict()))
                tmp.replace(self.cache_file)
            except OSError as exc:
                log.warning("cannot cache node schemas in %s: %s", self.cache_file, exc)

    def current_object_info(self) -> dict[str, dict[str, Any]]:
        """The schemas with model-file choices listed now (files appear without a restart)."""
        info = dict(self.object_info)
        for class_type, inputs in self.model_inputs.items():
            if class_type not in info:
                continue
            schema = json.loads(json.dumps(info[class_type]))
            for section in schema["input"].values():
                for name, folder in inputs.items():
                    if name in section and isinstance(section[name], list):
                        section[name][0] = self.folders.list_models(folder)
            info[class_type] = schema
        return info

    def validate(self, prompt: ApiPrompt, *, targets: list[str] | None = None,
                 limits: InputLimits | None = None) -> ValidationResult:
        """Validate ``prompt`` against the reported schemas, model files looked up in ``folders``
        (safe to call from another thread: it reads the schemas once)."""
        return validate(prompt, self.registry, ctx=self.hook_context, targets=targets, limits=limits)

    def long_running(self, prompt: ApiPrompt) -> bool:
        """Whether a node of ``prompt`` is of a class that declares itself long-running."""
        return any(self.object_info.get(node.get("class_type", ""), {}).get("long_running", False)
                   for node in prompt.values())

    def models_used(self, prompt: ApiPrompt) -> frozenset[str]:
        """``folder/name`` of every model file the prompt picks, for worker affinity."""
        used = set()
        for node in prompt.values():
            for name, folder in self.model_inputs.get(node.get("class_type", ""), {}).items():
                value = node.get("inputs", {}).get(name)
                if isinstance(value, str):
                    used.add(f"{folder}/{value}")
        return frozenset(used)


def _stand_in(name: str, schema: dict[str, Any], model_folders: dict[str, str],
              folders: FolderPaths) -> type[Node]:
    specs: list[InputSpec] = []
    sections = schema.get("input", {})
    order = schema.get("input_order", {})
    for section in ("required", "optional"):
        entries = sections.get(section, {})
        for input_name in order.get(section, list(entries)):
            if input_name in entries:
                specs.append(_input_spec(input_name, entries[input_name], section == "optional",
                                         model_folders.get(input_name), folders))
    for input_name, kind in sections.get("hidden", {}).items():
        specs.append(InputSpec(name=input_name, type=kind if kind in HIDDEN_KINDS else str(kind), hidden=True))
    outputs = [Output(kind, out_name, bool(is_list)) for kind, out_name, is_list in zip(
        schema.get("output", []), schema.get("output_name", []), schema.get("output_is_list", []))]

    def run(self: Node, ctx: Any, **inputs: Any) -> Any:
        raise RuntimeError(f"{name} is a schema stand-in; nodes run in worker processes")

    attrs = {"inputs": specs, "outputs": outputs, "output_node": bool(schema.get("output_node")),
             "category": schema.get("category", ""), "description": schema.get("description", ""),
             "display_name": schema.get("display_name"), "python_module": schema.get("python_module", ""),
             "long_running": bool(schema.get("long_running")),
             "run": run, "__module__": __name__}
    return type(name, (Node,), attrs)


def _input_spec(name: str, entry: Any, optional: bool, model_folder: str | None,
                folders: FolderPaths) -> InputSpec:
    kind = entry[0] if isinstance(entry, list) and entry else entry
    opts = dict(entry[1]) if isinstance(entry, list) and len(entry) > 1 and isinstance(entry[1], dict) else {}
    fields: dict[str, Any] = {}
    for key, field_name in _SPEC_KEYS.items():
        if key in opts:
            fields[field_name] = opts.pop(key)
    if isinstance(kind, list) or kind == "COMBO":
        if model_folder is not None:
            fields["choices"] = lambda ctx: ctx.folders.list_models(model_folder)
        else:
            fields["choices"] = list(kind) if isinstance(kind, list) else list(opts.pop("options", []))
        kind = "COMBO"
    return InputSpec(name=name, type=str(kind), optional=optional, model_folder=model_folder,
                     options=opts, **fields)
