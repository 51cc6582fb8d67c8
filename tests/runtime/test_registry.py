"""Plugin discovery: folders, entry points, failures and name clashes reported, never fatal."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from graph_runtime import NodeRegistry, load_plugins, load_registry

from . import toynodes

PLUGIN = '''
from graph_runtime import Context, Int, Node, Output, hookimpl

class {name}(Node):
    category = "plugin"
    inputs = [Int("value", 1)]
    outputs = [Output("INT")]

    def run(self, ctx: Context, *, value: int) -> tuple[int]:
        return (value + 1,)

@hookimpl
def nodeloom_register_nodes():
    return [{name}]

@hookimpl
def nodeloom_register_types():
    return {{"{name}_TYPE": "a type from {name}"}}
'''


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "plugins"
    directory.mkdir()
    yield directory
    for name in [m for m in sys.modules if m.startswith("plugins.")]:
        del sys.modules[name]


def write(directory: Path, name: str, source: str, *, package: bool = False) -> None:
    if package:
        (directory / name).mkdir()
        (directory / name / "__init__.py").write_text(textwrap.dedent(source))
    else:
        (directory / f"{name}.py").write_text(textwrap.dedent(source))


def test_folder_plugins_module_and_package(plugins_dir: Path) -> None:
    write(plugins_dir, "alpha", PLUGIN.format(name="AlphaNode"))
    write(plugins_dir, "beta", PLUGIN.format(name="BetaNode"), package=True)
    write(plugins_dir, "_ignored", PLUGIN.format(name="Hidden"))
    registry = load_registry(plugin_dirs=[plugins_dir], builtins=(), entry_points=False)
    assert registry.origin == {"AlphaNode": "plugins.alpha", "BetaNode": "plugins.beta"}
    assert registry.nodes["AlphaNode"].python_module == "plugins.alpha"
    assert registry.types["AlphaNode_TYPE"] == "a type from AlphaNode"
    record = registry.plugins[0]
    assert (record.name, record.source, record.status, record.nodes) == ("plugins.alpha", "folder", "loaded", ["AlphaNode"])


def test_failing_plugins_are_reported_not_fatal(plugins_dir: Path) -> None:
    write(plugins_dir, "broken_import", "import no_such_module_anywhere\n")
    write(plugins_dir, "syntax", "def oops(:\n")
    write(plugins_dir, "raising_hook", """
        from graph_runtime import hookimpl

        @hookimpl
        def nodeloom_register_nodes():
            raise RuntimeError("plugin setup failed")
    """)
    write(plugins_dir, "good", PLUGIN.format(name="GoodNode"))
    registry = load_registry(plugin_dirs=[plugins_dir], builtins=(), entry_points=False)
    status = {r.name: (r.status, r.error) for r in registry.plugins}
    assert status["plugins.broken_import"][0] == "failed"
    assert "ModuleNotFoundError" in status["plugins.broken_import"][1]
    assert "SyntaxError" in status["plugins.syntax"][1]
    assert status["plugins.raising_hook"] == ("failed", "RuntimeError: plugin setup failed")
    assert status["plugins.good"] == ("loaded", None) and "GoodNode" in registry.nodes


def test_clashing_node_name_is_skipped_and_reported(plugins_dir: Path) -> None:
    write(plugins_dir, "first", PLUGIN.format(name="SharedName"))
    write(plugins_dir, "second", PLUGIN.format(name="SharedName"))
    registry = load_registry(plugin_dirs=[plugins_dir], builtins=(), entry_points=False)
    assert registry.origin["SharedName"] == "plugins.first"
    second = next(r for r in registry.plugins if r.name == "plugins.second")
    assert second.status == "loaded" and second.nodes == []
    assert second.skipped == {"SharedName": "name already registered by plugin 'plugins.first'"}


def test_entry_points_load_and_a_broken_one_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    module = SimpleNamespace(__file__="toy.py", nodeloom_register_nodes=None)
    from graph_runtime import hookimpl

    @hookimpl
    def nodeloom_register_nodes() -> list[Any]:
        return [toynodes.Number]

    module.nodeloom_register_nodes = nodeloom_register_nodes

    class Entry:
        def __init__(self, name: str, loader: Any) -> None:
            self.name, self.value, self._loader = name, f"{name}:module", loader

        def load(self) -> Any:
            return self._loader()

    def broken() -> Any:
        raise ImportError("missing dependency 'foo'")

    entries = [Entry("toy", lambda: module), Entry("broken", broken)]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: entries if group == "nodeloom.plugins" else [])
    registry = load_registry(builtins=())
    assert registry.origin["Number"] == "toy"
    broken_record = next(r for r in registry.plugins if r.name == "broken")
    assert broken_record.source == "entry_point" and broken_record.error == "ImportError: missing dependency 'foo'"


def test_missing_builtin_is_reported() -> None:
    registry = load_registry(builtins=("nodes.does_not_exist",), entry_points=False)
    (record,) = registry.plugins
    assert record.status == "failed" and record.source == "builtin"


def test_add_node_refuses_a_clash() -> None:
    registry = NodeRegistry()
    registry.add_node(toynodes.Number, plugin="a")

    class Number(toynodes.Number):
        pass

    with pytest.raises(ValueError, match="already registered by plugin 'a'"):
        registry.add_node(Number, plugin="b")


# -- hook names checked (pluggy's check_pending) ---------------------------------------------------

TYPO = '''
from graph_runtime import hookimpl
from runtime.toynodes import Number

@hookimpl
def nodeloom_register_node():
    return [Number]
'''


def test_a_misspelt_hook_fails_its_plugin_naming_hook_and_nearest_spec(plugins_dir: Path) -> None:
    write(plugins_dir, "typo", TYPO)
    write(plugins_dir, "good", PLUGIN.format(name="GoodNode"))
    registry = load_registry(plugin_dirs=[plugins_dir], builtins=(), entry_points=False)
    typo = next(r for r in registry.plugins if r.name == "plugins.typo")
    assert typo.status == "failed" and typo.nodes == []
    assert typo.error is not None
    assert "'plugins.typo'" in typo.error and "'nodeloom_register_node'" in typo.error
    assert "did you mean 'nodeloom_register_nodes'?" in typo.error
    assert "GoodNode" in registry.nodes and "Number" not in registry.nodes


FAMILY_SPECS = '''
from graph_runtime import hookimpl
import pluggy

hookspec = pluggy.HookspecMarker("nodeloom")


class Specs:
    @hookspec
    def nodeloom_register_samplers(self):
        """The sampler factories of this family."""


@hookimpl
def nodeloom_addhooks(pluginmanager):
    pluginmanager.add_hookspecs(Specs)
'''

SAMPLER_PLUGIN = '''
from graph_runtime import hookimpl

@hookimpl
def nodeloom_register_samplers():
    return {"mine": object}
'''


def test_hooks_of_a_plugin_defined_spec_are_accepted_whatever_the_load_order(plugins_dir: Path) -> None:
    """``a_user`` implements the hook before ``z_family`` (loaded after it) adds the spec."""
    write(plugins_dir, "a_user", SAMPLER_PLUGIN)
    write(plugins_dir, "z_family", FAMILY_SPECS)
    registry = load_registry(plugin_dirs=[plugins_dir], builtins=(), entry_points=False)
    assert [(r.name, r.status, r.error) for r in registry.plugins] == [
        ("plugins.a_user", "loaded", None), ("plugins.z_family", "loaded", None)]
    assert registry.hook.nodeloom_register_samplers() == [{"mine": object}]


def test_without_the_spec_plugin_the_family_hook_is_unknown(plugins_dir: Path) -> None:
    write(plugins_dir, "a_user", SAMPLER_PLUGIN)
    registry = load_registry(plugin_dirs=[plugins_dir], builtins=(), entry_points=False)
    (record,) = registry.plugins
    assert record.status == "failed" and "'nodeloom_register_samplers'" in (record.error or "")


# -- link types checked ----------------------------------------------------------------------------

TYPED = '''
from graph_runtime import Context, Link, Node, Output, hookimpl

class {name}(Node):
    category = "plugin"
    inputs = [Link("x", "{input_type}")]
    outputs = [Output("{output_type}")]

    def run(self, ctx: Context, *, x):
        return (x,)

@hookimpl
def nodeloom_register_nodes():
    return [{name}]
'''

TYPES = '''
from graph_runtime import hookimpl

@hookimpl
def nodeloom_register_types():
    return {"PALETTE": "colours"}
'''


def test_a_node_with_an_undeclared_link_type_is_skipped_naming_the_nearest(plugins_dir: Path) -> None:
    write(plugins_dir, "typed", TYPED.format(name="Blurry", input_type="IMAG", output_type="IMAGE"))
    registry = load_registry(plugin_dirs=[plugins_dir], builtins=(), entry_points=False)
    (record,) = registry.plugins
    assert "Blurry" not in registry.nodes and record.status == "loaded"
    assert "'IMAG'" in record.skipped["Blurry"] and "did you mean 'IMAGE'?" in record.skipped["Blurry"]


def test_a_type_registered_by_a_later_plugin_is_known(plugins_dir: Path) -> None:
    write(plugins_dir, "a_nodes", TYPED.format(name="Swatch", input_type="PALETTE", output_type="IMAGE"))
    write(plugins_dir, "b_types", TYPES)
    registry = load_registry(plugin_dirs=[plugins_dir], builtins=(), entry_points=False)
    assert registry.origin["Swatch"] == "plugins.a_nodes"
    assert all(not r.skipped for r in registry.plugins)


def test_comma_separated_and_core_types_are_accepted(plugins_dir: Path) -> None:
    write(plugins_dir, "multi", TYPED.format(name="Either", input_type="IMAGE,MASK", output_type="*"))
    registry = load_registry(plugin_dirs=[plugins_dir], builtins=(), entry_points=False)
    assert "Either" in registry.nodes


# -- two steps: plugins first, nodes when needed ---------------------------------------------------

LAZY = '''
from graph_runtime import hookimpl

@hookimpl
def nodeloom_register_nodes():
    from . import node_classes  # imported only when the nodes are collected
    return node_classes.NODES
'''


def test_loading_plugins_imports_no_node_module(plugins_dir: Path) -> None:
    write(plugins_dir, "lazy", LAZY, package=True)
    (plugins_dir / "lazy" / "node_classes.py").write_text(
        PLUGIN.format(name="LazyNode").split("@hookimpl")[0] + "NODES = [LazyNode]\n")
    registry = load_plugins(plugin_dirs=[plugins_dir], builtins=(), entry_points=False)
    assert registry.nodes == {} and "plugins.lazy.node_classes" not in sys.modules
    registry.load_nodes()
    assert registry.origin == {"LazyNode": "plugins.lazy"} and "plugins.lazy.node_classes" in sys.modules


def test_builtin_packs_come_from_the_entry_point_group() -> None:
    import graph_runtime.registry

    assert not hasattr(graph_runtime.registry, "BUILTIN_PLUGINS")
    registry = load_plugins()
    sources = {r.name: r.source for r in registry.plugins}
    assert sources["nodes.core"] == sources["nodes.diffusion"] == sources["server"] == "entry_point"
    assert load_plugins(entry_points=False).plugins == []


# -- calls into every plugin -----------------------------------------------------------------------

SETTINGS = '''
from graph_runtime import hookimpl

SEEN = []

@hookimpl
def nodeloom_settings(options):
    return {{"{key}": options.get("level"), "shared": "{key}"}}

@hookimpl
def nodeloom_startup(config, registry):
    SEEN.append((dict(config), sorted(registry.nodes)))
'''


def test_settings_merge_in_load_order_and_startup_gets_config_and_registry(plugins_dir: Path) -> None:
    write(plugins_dir, "first", SETTINGS.format(key="first"))
    write(plugins_dir, "second", SETTINGS.format(key="second"))
    write(plugins_dir, "nodes", PLUGIN.format(name="StartNode"))
    registry = load_registry(plugin_dirs=[plugins_dir], builtins=(), entry_points=False)
    assert registry.settings({"level": 3}) == {"first": 3, "second": 3, "shared": "second"}
    registry.startup({"base": "/b"})
    assert sys.modules["plugins.first"].SEEN == [({"base": "/b"}, ["StartNode"])]


def test_a_failing_hook_call_is_recorded_and_the_others_still_run(plugins_dir: Path) -> None:
    write(plugins_dir, "bad", '''
        from graph_runtime import hookimpl

        @hookimpl
        def nodeloom_startup(config):
            raise OSError("no cache folder")
    ''')
    write(plugins_dir, "good", SETTINGS.format(key="good"))
    registry = load_registry(plugin_dirs=[plugins_dir], builtins=(), entry_points=False)
    failures = registry.call_each("nodeloom_startup", config={}, registry=registry)
    assert failures == ["plugin plugins.bad: nodeloom_startup failed: OSError: no cache folder"]
    assert sys.modules["plugins.good"].SEEN == [({}, [])]


RESOURCES = '''
from graph_runtime import hookimpl

@hookimpl
def nodeloom_resource_stats(services):
    return {"{key}": services.get("held")}

@hookimpl
def nodeloom_free_resources(services, unload_models, free_memory):
    services.set("held", None if unload_models else services.get("held"))
'''


def test_resource_stats_and_free_go_through_the_hooks(plugins_dir: Path) -> None:
    from graph_runtime import FolderPaths, OutputCache, Runtime, Services

    write(plugins_dir, "res", RESOURCES.replace("{key}", "res"))
    registry = load_registry(plugin_dirs=[plugins_dir], builtins=(), entry_points=False)
    cache = OutputCache()
    cache.put("sig", (["value"],), None)
    runtime = Runtime(registry, folders=FolderPaths(base=plugins_dir), cache=cache, services=Services(held=2))
    assert runtime.resource_stats() == {"res": 2}
    runtime.free(unload_models=True, free_memory=False)
    assert runtime.resource_stats() == {"res": None} and "sig" not in cache


def test_long_running_prompts_are_recognised(registry: NodeRegistry) -> None:
    class Train(toynodes.Number):
        long_running = True

    registry.add_node(Train)
    assert not registry.long_running({"1": {"class_type": "Number", "inputs": {}}})
    assert registry.long_running({"1": {"class_type": "Number", "inputs": {}},
                                  "2": {"class_type": "Train", "inputs": {}}})
    assert not registry.long_running({"1": "junk", "2": {"class_type": 5}})
