"""Plugin discovery and the node registry.

Plugins come from three places, all loaded the same way (pluggy): the built-in node packs, the
``nodeloom.plugins`` entry-point group of installed distributions, and the packages or modules in
the plugins folder. A plugin that fails to import, or whose hook raises, is recorded as failed and
skipped; a node whose name another plugin already took is skipped and reported. Neither stops the
process.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import pluggy

from graph_runtime import hookspecs
from graph_runtime.node import Node

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "nodeloom.plugins"
BUILTIN_PLUGINS: tuple[str, ...] = ("nodes.core", "nodes.diffusion")

CORE_TYPES: dict[str, str] = {
    "MODEL": "a diffusion model (UNet) with its patches",
    "CLIP": "text encoder(s) and tokenizer(s)",
    "VAE": "image autoencoder",
    "CONDITIONING": "encoded prompt: list of [embeddings, extras]",
    "LATENT": "{'samples': tensor [B,C,h,w], optional 'noise_mask', 'batch_index'}",
    "IMAGE": "float tensor [B,H,W,C] in 0..1",
    "MASK": "float tensor [B,H,W] in 0..1",
    "CONTROL_NET": "a ControlNet model",
    "UPSCALE_MODEL": "an image-to-image upscaler (spandrel descriptor)",
    "CLIP_VISION": "an image encoder",
    "CLIP_VISION_OUTPUT": "image encoder outputs",
    "SAMPLER": "a sampling algorithm",
    "SIGMAS": "a noise schedule",
    "NOISE": "a noise source",
    "GUIDER": "a guidance method",
    "INT": "integer", "FLOAT": "float", "STRING": "string", "BOOLEAN": "boolean",
    "*": "any type",
}

Source = Literal["builtin", "entry_point", "folder"]


@dataclass
class PluginRecord:
    name: str
    source: Source
    location: str
    status: Literal["loaded", "failed"] = "loaded"
    error: str | None = None
    nodes: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    # Node names this plugin declared but could not register, with the reason.
    skipped: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "location": self.location,
                "status": self.status, "error": self.error, "nodes": self.nodes,
                "types": self.types, "skipped": self.skipped}


class NodeRegistry:
    """Node classes by ``class_type``, the link types, and the plugins they came from."""

    def __init__(self) -> None:
        self.nodes: dict[str, type[Node]] = {}
        self.origin: dict[str, str] = {}
        self.types: dict[str, str] = dict(CORE_TYPES)
        self.plugins: list[PluginRecord] = []
        self._manager = pluggy.PluginManager(hookspecs.PROJECT)
        self._manager.add_hookspecs(hookspecs)

    @property
    def hook(self) -> Any:
        """The plugin manager's hook caller: ``registry.hook.nodeloom_…(**kwargs)``."""
        return self._manager.hook

    def get(self, class_type: str) -> type[Node] | None:
        return self.nodes.get(class_type)

    def __contains__(self, class_type: object) -> bool:
        return class_type in self.nodes

    def add_node(self, cls: type[Node], *, plugin: str = "local") -> None:
        """Register one class directly (tests, embedding). Raises on a name clash."""
        name = cls.__name__
        if name in self.nodes and self.nodes[name] is not cls:
            raise ValueError(f"node {name!r} is already registered by plugin {self.origin[name]!r}")
        self.nodes[name] = cls
        self.origin[name] = plugin

    def register_plugin(self, module: ModuleType, *, name: str, source: Source,
                        location: str = "") -> PluginRecord:
        record = PluginRecord(name=name, source=source, location=location or getattr(module, "__file__", "") or "")
        self.plugins.append(record)
        try:
            self._manager.register(module, name=name)
        except Exception as exc:  # noqa: BLE001 - a bad plugin is reported, never fatal
            return _fail(record, exc)
        for hook_name in ("nodeloom_addhooks", "nodeloom_register_types", "nodeloom_register_nodes"):
            for impl in getattr(self._manager.hook, hook_name).get_hookimpls():
                if impl.plugin_name != name:
                    continue
                try:
                    if hook_name == "nodeloom_addhooks":
                        impl.function(pluginmanager=self._manager)
                        continue
                    value = impl.function()
                except Exception as exc:  # noqa: BLE001
                    self._manager.unregister(name=name)
                    return _fail(record, exc)
                if hook_name == "nodeloom_register_types":
                    self._add_types(record, value or {})
                else:
                    self._add_nodes(record, value or [])
        return record

    def startup(self, config: dict[str, Any]) -> None:
        for impl in self._manager.hook.nodeloom_startup.get_hookimpls():
            try:
                impl.function(**{k: v for k, v in (("config", config), ("registry", self)) if k in impl.argnames})
            except Exception as exc:  # noqa: BLE001
                record = next((p for p in self.plugins if p.name == impl.plugin_name), None)
                if record is not None:
                    record.error = f"startup failed: {type(exc).__name__}: {exc}"
                log.exception("plugin %s failed at startup", impl.plugin_name)

    def _add_types(self, record: PluginRecord, types: dict[str, str]) -> None:
        for type_name, description in types.items():
            self.types.setdefault(type_name, description)
            record.types.append(type_name)

    def _add_nodes(self, record: PluginRecord, classes: Iterable[type[Node]]) -> None:
        for cls in classes:
            if not (isinstance(cls, type) and issubclass(cls, Node)):
                record.skipped[repr(cls)] = "not a Node subclass"
                continue
            name = cls.__name__
            if name in self.nodes:
                record.skipped[name] = f"name already registered by plugin {self.origin[name]!r}"
                continue
            if "python_module" not in cls.__dict__:
                cls.python_module = record.name
            self.nodes[name] = cls
            self.origin[name] = record.name
            record.nodes.append(name)


def _fail(record: PluginRecord, exc: BaseException) -> PluginRecord:
    record.status = "failed"
    record.error = f"{type(exc).__name__}: {exc}"
    log.warning("plugin %s skipped: %s", record.name, record.error)
    log.debug("%s", "".join(traceback.format_exception(exc)))
    return record


def load_registry(*, plugin_dirs: Iterable[Path] = (), builtins: Iterable[str] = BUILTIN_PLUGINS,
                  entry_points: bool = True) -> NodeRegistry:
    """Build a registry from the built-in packs, installed entry points and plugin folders."""
    registry = NodeRegistry()
    for module_name in builtins:
        module = _import_named(registry, module_name, "builtin")
        if module is not None:
            registry.register_plugin(module, name=module_name, source="builtin")
    if entry_points:
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if any(record.name == entry.name for record in registry.plugins):
                continue
            try:
                module = entry.load()
            except Exception as exc:  # noqa: BLE001
                _fail(_record(registry, entry.name, "entry_point", entry.value), exc)
                continue
            registry.register_plugin(module, name=entry.name, source="entry_point", location=entry.value)
    for directory in plugin_dirs:
        for path in sorted(Path(directory).iterdir()) if Path(directory).is_dir() else []:
            plugin_name = _folder_plugin_name(path)
            if plugin_name is None:
                continue
            try:
                module = _import_path(path, plugin_name)
            except Exception as exc:  # noqa: BLE001 - includes SyntaxError in the plugin
                _fail(_record(registry, plugin_name, "folder", str(path)), exc)
                continue
            registry.register_plugin(module, name=plugin_name, source="folder", location=str(path))
    return registry


def _record(registry: NodeRegistry, name: str, source: Source, location: str) -> PluginRecord:
    record = PluginRecord(name=name, source=source, location=location)
    registry.plugins.append(record)
    return record


def _import_named(registry: NodeRegistry, module_name: str, source: Source) -> ModuleType | None:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001
        _fail(_record(registry, module_name, source, module_name), exc)
        return None


def _folder_plugin_name(path: Path) -> str | None:
    if path.name.startswith((".", "_")):
        return None
    if path.is_dir() and (path / "__init__.py").exists():
        return f"plugins.{path.name}"
    if path.is_file() and path.suffix == ".py":
        return f"plugins.{path.stem}"
    return None


def _import_path(path: Path, module_name: str) -> ModuleType:
    if module_name in sys.modules:
        return sys.modules[module_name]
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(
            module_name, path / "__init__.py", submodule_search_locations=[str(path)])
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None, f"cannot import plugin at {path}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module
