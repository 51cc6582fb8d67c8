"""Plugin discovery and the node registry.

Plugins come from the ``nodeloom.plugins`` entry-point group of installed distributions (the
built-in node packs and the server are registered there too), the packages or modules in the
plugins folder, and, for tests, modules named explicitly; all are loaded the same way (pluggy). A
plugin that fails to import, whose hook raises, or that implements a hook no specification
declares is recorded as failed and skipped; a node whose name another plugin already took, or
that declares an unknown link type, is skipped and reported. Neither stops the process.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from graph_runtime import hookspecs
from graph_runtime.node import Node
from graph_runtime.plugin_records import CORE_TYPES, PluginRecord, Source, fail_plugin
from graph_runtime.plugin_checks import (
    call_impl, pending_failure, undeclared_type_reason, undecorated_hooks, unknown_link_types,
)
from graph_runtime.plugin_folders import folder_plugin_name, import_path

if TYPE_CHECKING:
    from graph_runtime.context import Services
    from graph_runtime.folders import FolderPaths

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "nodeloom.plugins"

class NodeRegistry:
    """Node classes by ``class_type``, the link types, and the plugins they came from.

    Loading has two steps, so a command line can be built from the plugins' hooks without
    importing any node module: ``register_plugin`` (each plugin) then ``check_plugins`` (hook
    names), and later ``load_nodes`` (types and node classes of every plugin, checked).
    """

    def __init__(self) -> None:
        self.nodes: dict[str, type[Node]] = {}
        self.origin: dict[str, str] = {}
        self.types: dict[str, str] = dict(CORE_TYPES)
        self.plugins: list[PluginRecord] = []
        self.nodes_loaded = False
        self._manager = pluggy.PluginManager(hookspecs.PROJECT)
        self._manager.add_hookspecs(hookspecs)
        # Historic: a plugin registered later still gets its own hook specs added.
        self._manager.hook.nodeloom_addhooks.call_historic(kwargs={"pluginmanager": self._manager})

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

    # -- loading -----------------------------------------------------------------------------

    def register_plugin(self, module: ModuleType, *, name: str, source: Source,
                        location: str = "") -> PluginRecord:
        """Register a plugin module's hooks (its ``nodeloom_addhooks`` runs now); its nodes are
        collected by ``load_nodes``. A plugin that fails is recorded as failed, never raised; a
        name another plugin already holds fails the newcomer only."""
        record = PluginRecord(name=name, source=source, location=location or getattr(module, "__file__", "") or "")
        taken = self._loaded_record(name)
        self.plugins.append(record)
        if taken is not None:
            return fail_plugin(record, _name_taken(name, taken, record.location))
        undecorated = undecorated_hooks(module, hookspecs.PROJECT)
        if undecorated:
            return fail_plugin(record, TypeError(
                f"{', '.join(undecorated)} lack(s) @hookimpl, so no hook would call them; decorate "
                "each with @hookimpl (from graph_runtime import hookimpl)"))
        try:
            self._manager.register(module, name=name)
        except Exception as exc:  # noqa: BLE001 - a bad plugin is reported, never fatal
            if self._manager.get_plugin(name) is module:  # partly registered: undo it, and only it
                self._drop(name)
            return fail_plugin(record, exc)
        return record

    def check_plugins(self) -> None:
        """After every plugin is registered: fail (and unregister) each plugin implementing a
        hook no specification declares, naming plugin, hook and the nearest spec."""
        while (problem := pending_failure(self._manager)) is not None:
            name = self._manager.get_name(problem.plugin)
            self._drop(name)
            record = self._record_of(name)
            if record is not None:
                fail_plugin(record, problem)

    def load_nodes(self) -> None:
        """Collect every loaded plugin's link types, then its node classes; a node declaring a
        link type no plugin registered is skipped with the reason. Runs once."""
        if self.nodes_loaded:
            return
        self.nodes_loaded = True
        self.check_plugins()
        for hook_name in ("nodeloom_register_types", "nodeloom_register_nodes"):
            # In registration order (plugins load in order); a hook call would go last-first.
            for impl in getattr(self._manager.hook, hook_name).get_hookimpls():
                record = self._record_of(impl.plugin_name)
                if record is None or record.status == "failed":
                    continue
                try:
                    value = impl.function()
                except Exception as exc:  # noqa: BLE001
                    self._drop(impl.plugin_name)
                    fail_plugin(record, exc)
                    continue
                if hook_name == "nodeloom_register_types":
                    self._add_types(record, value or {})
                else:
                    self._add_nodes(record, value or [])

    # -- calls into every plugin ---------------------------------------------------------------

    def settings(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The plugins' ``nodeloom_settings`` results for the parsed options, merged in load order
        (what nodes read from ``ctx.services.get("settings")``); a plugin whose hook raises is
        recorded, logged and left out."""
        return self._merged("nodeloom_settings", options=options)

    def batch_executors(self) -> dict[str, Any]:
        """The plugins' ``nodeloom_batch_executors``, merged: ``{name: factory(args, env)}``."""
        return self._merged("nodeloom_batch_executors")

    def bundled_model_paths(self) -> list[Path]:
        """The plugins' ``nodeloom_model_paths`` yaml files, in load order."""
        return [Path(path) for path in self._merged("nodeloom_model_paths").values()]

    def add_bundled_model_paths(self, folders: FolderPaths) -> None:
        """Add the folders of :meth:`bundled_model_paths` to ``folders``, after the user's own."""
        for path in self.bundled_model_paths():
            folders.load_extra_model_paths(path)

    def startup(self, config: Mapping[str, Any]) -> None:
        """Call every plugin's ``nodeloom_startup(config, registry)`` once its nodes are loaded."""
        self.call_each("nodeloom_startup", config=config, registry=self)

    def call_each(self, hook_name: str, *, after: Callable[[str], None] | None = None,
                  **kwargs: Any) -> list[str]:
        """Call each plugin's implementation of ``hook_name`` in load order (those of the command
        line and startup hooks), then ``after(plugin_name)`` if given. One that raises is recorded
        on its plugin and logged while the others still run; returns those failures, described."""
        failures: list[str] = []
        self._call_isolated(hook_name, kwargs, failures, after=after)
        return failures

    def resource_stats(self, services: Services) -> dict[str, Any]:
        """What the plugins' long-lived resources in ``services`` hold, merged across plugins; a
        plugin whose hook raises is recorded, logged and left out."""
        return self._merged("nodeloom_resource_stats", services=services)

    def free_resources(self, services: Services, *, unload_models: bool, free_memory: bool) -> None:
        """Ask every plugin to release its resources in ``services`` (``POST /free``); a plugin
        whose hook raises is recorded and logged, and the others still run."""
        self.call_each("nodeloom_free_resources", services=services, unload_models=unload_models,
                       free_memory=free_memory)

    def long_running(self, prompt: Mapping[str, Any]) -> bool:
        """Whether the API-format ``prompt`` holds a node declared ``long_running`` (training,
        say): the server runs such a prompt where it does not hold up short ones."""
        for node in prompt.values():
            class_type = node.get("class_type") if isinstance(node, dict) else None
            cls = self.nodes.get(class_type) if isinstance(class_type, str) else None
            if cls is not None and cls.long_running:
                return True
        return False

    # -- internals ---------------------------------------------------------------------------

    def _merged(self, hook_name: str, **kwargs: Any) -> dict[str, Any]:
        """The dicts the plugins' ``hook_name`` return, merged in load order (later plugins
        override earlier ones); a failing plugin is left out, recorded and logged."""
        merged: dict[str, Any] = {}
        for part in self._call_isolated(hook_name, kwargs, []):
            merged.update(part or {})
        return merged

    def _call_isolated(self, hook_name: str, kwargs: Mapping[str, Any], failures: list[str], *,
                       after: Callable[[str], None] | None = None) -> list[Any]:
        """Each plugin's ``hook_name`` result in load order; a plugin whose implementation raises
        gets the failure on its record and one warning line, and is appended to ``failures``."""
        results: list[Any] = []
        for impl in getattr(self._manager.hook, hook_name).get_hookimpls():
            try:
                results.append(call_impl(impl, **kwargs))
            except Exception as exc:  # noqa: BLE001 - one plugin must not take the others down
                failure = f"{hook_name} failed: {type(exc).__name__}: {exc}"
                record = self._record_of(impl.plugin_name)
                if record is not None:
                    record.error = failure
                log.warning("plugin %s: %s", impl.plugin_name, failure)
                log.debug("plugin %s: %s", impl.plugin_name, failure, exc_info=True)
                failures.append(f"plugin {impl.plugin_name}: {failure}")
            if after is not None:
                after(impl.plugin_name)
        return results

    def _record_of(self, name: str | None) -> PluginRecord | None:
        return self._loaded_record(name) or next((p for p in self.plugins if p.name == name), None)

    def _loaded_record(self, name: str | None) -> PluginRecord | None:
        return next((p for p in self.plugins if p.name == name and p.status == "loaded"), None)

    def _drop(self, name: str | None) -> None:
        if name is not None and self._manager.has_plugin(name):
            self._manager.unregister(name=name)

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
            missing = unknown_link_types(cls, self.types)
            if missing:
                record.skipped[name] = undeclared_type_reason(missing, self.types)
                continue
            if "python_module" not in cls.__dict__:
                cls.python_module = record.name
            self.nodes[name] = cls
            self.origin[name] = record.name
            record.nodes.append(name)


def load_plugins(*, plugin_dirs: Iterable[Path] = (), builtins: Iterable[str] = (),
                 entry_points: bool = True) -> NodeRegistry:
    """Register (without collecting nodes) the plugins: the modules named in ``builtins`` (tests
    narrowing the packs), those of the ``nodeloom.plugins`` entry-point group (the built-in packs
    ``nodes.core`` and ``nodes.diffusion`` are installed there like any third party) and those in
    ``plugin_dirs``; then check their hook names. Importing a plugin module must stay cheap, so
    this is what a command line is built from."""
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
                fail_plugin(_record(registry, entry.name, "entry_point", entry.value), exc)
                continue
            registry.register_plugin(module, name=entry.name, source="entry_point", location=entry.value)
    for directory in plugin_dirs:
        for path in sorted(Path(directory).iterdir()) if Path(directory).is_dir() else []:
            plugin_name = folder_plugin_name(path)
            if plugin_name is None:
                continue
            taken = registry._loaded_record(plugin_name)
            if taken is not None:  # not even imported: the name is held by another folder's plugin
                fail_plugin(_record(registry, plugin_name, "folder", str(path)),
                            _name_taken(plugin_name, taken, str(path)))
                continue
            try:
                module = import_path(path, plugin_name)
            except Exception as exc:  # noqa: BLE001 - includes SyntaxError in the plugin
                fail_plugin(_record(registry, plugin_name, "folder", str(path)), exc)
                continue
            registry.register_plugin(module, name=plugin_name, source="folder", location=str(path))
    registry.check_plugins()
    return registry


def load_registry(*, plugin_dirs: Iterable[Path] = (), builtins: Iterable[str] = (),
                  entry_points: bool = True) -> NodeRegistry:
    """``load_plugins`` then ``load_nodes``: a registry with every plugin's nodes, checked."""
    registry = load_plugins(plugin_dirs=plugin_dirs, builtins=builtins, entry_points=entry_points)
    registry.load_nodes()
    return registry


def _record(registry: NodeRegistry, name: str, source: Source, location: str) -> PluginRecord:
    record = PluginRecord(name=name, source=source, location=location)
    registry.plugins.append(record)
    return record


def _name_taken(name: str, taken: PluginRecord, location: str) -> ValueError:
    return ValueError(f"plugin name {name!r} is already taken by the plugin at {taken.location or '?'}; "
                      f"this one at {location or '?'} is not loaded (rename one of them)")


def _import_named(registry: NodeRegistry, module_name: str, source: Source) -> ModuleType | None:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001
        fail_plugin(_record(registry, module_name, source, module_name), exc)
        return None
