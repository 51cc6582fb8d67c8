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

from graph_runtime import NodeRegistry, load_registry

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
