"""A plugin that misbehaves fails alone: raising settings/stats/free hooks, a plugin name two
folders share, hook functions without @hookimpl."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from graph_runtime import FolderPaths, Runtime, Services, load_registry

from .test_registry import PLUGIN, RESOURCES, SETTINGS, plugins_dir, write  # noqa: F401 - fixture

RAISING = '''
from graph_runtime import hookimpl

@hookimpl
def nodeloom_settings(options):
    raise KeyError("missing key")

@hookimpl
def nodeloom_resource_stats(services):
    raise RuntimeError("stats exploded")

@hookimpl
def nodeloom_free_resources(services, unload_models, free_memory):
    raise RuntimeError("free exploded")
'''


def _load(plugins_dir: Path) -> Runtime:
    write(plugins_dir, "aaa_raising", RAISING)
    write(plugins_dir, "good", SETTINGS.format(key="good"))
    write(plugins_dir, "res", RESOURCES.replace("{key}", "res"))
    registry = load_registry(plugin_dirs=[plugins_dir], builtins=(), entry_points=False)
    return Runtime(registry, folders=FolderPaths(base=plugins_dir), services=Services(held=2))


def _record(runtime: Runtime, name: str):  # noqa: ANN202
    return next(p for p in runtime.registry.plugins if p.name == name)


def test_a_raising_settings_hook_is_recorded_and_the_others_settings_kept(
        plugins_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    runtime = _load(plugins_dir)
    with caplog.at_level(logging.WARNING):
        assert runtime.registry.settings({"level": 4}) == {"good": 4, "shared": "good"}
    error = "nodeloom_settings failed: KeyError: 'missing key'"
    assert _record(runtime, "plugins.aaa_raising").error == error
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"plugin plugins.aaa_raising: {error}"]


def test_a_raising_resource_stats_hook_leaves_the_others_stats(plugins_dir: Path) -> None:
    runtime = _load(plugins_dir)
    assert runtime.resource_stats() == {"res": 2}
    record = _record(runtime, "plugins.aaa_raising")
    assert (record.status, record.error) == ("loaded", "nodeloom_resource_stats failed: RuntimeError: stats exploded")


def test_a_raising_free_hook_does_not_stop_the_others_freeing(plugins_dir: Path) -> None:
    runtime = _load(plugins_dir)
    runtime.free(unload_models=True, free_memory=True)
    assert _record(runtime, "plugins.aaa_raising").error == "nodeloom_free_resources failed: RuntimeError: free exploded"
    assert runtime.resource_stats() == {"res": None}


def _same_named(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "pa", tmp_path / "pb"
    for folder, node in ((first, "WhichA"), (second, "WhichB")):
        folder.mkdir()
        write(folder, "sameplug", PLUGIN.format(name=node), package=True)
    return first, second


def test_a_plugin_name_two_folders_share_fails_only_the_newcomer(plugins_dir: Path, tmp_path: Path) -> None:
    first, second = _same_named(tmp_path)
    registry = load_registry(plugin_dirs=[first, second], builtins=(), entry_points=False)
    assert registry.origin == {"WhichA": "plugins.sameplug"}
    loaded, newcomer = registry.plugins
    assert (loaded.status, loaded.location, loaded.nodes) == ("loaded", str(first / "sameplug"), ["WhichA"])
    assert newcomer.status == "failed"
    assert str(first / "sameplug") in newcomer.error and str(second / "sameplug") in newcomer.error
    assert "already taken" in newcomer.error and "_name2plugin" not in newcomer.error


def test_registering_a_taken_name_keeps_the_first_plugin_registered(plugins_dir: Path, tmp_path: Path) -> None:
    first, second = _same_named(tmp_path)
    registry = load_registry(plugin_dirs=[first], builtins=(), entry_points=False)
    other = sys.modules["plugins.sameplug"]
    record = registry.register_plugin(other, name="plugins.sameplug", source="folder", location="elsewhere")
    assert record.status == "failed" and "already taken" in record.error and "elsewhere" in record.error
    assert registry.call_each("nodeloom_register_types") == []
    assert [p.status for p in registry.plugins] == ["loaded", "failed"]
    assert registry.hook.nodeloom_register_nodes.get_hookimpls()  # the first is still registered


def test_two_registries_with_same_named_folder_plugins_each_get_their_own_code(
        plugins_dir: Path, tmp_path: Path) -> None:
    first, second = _same_named(tmp_path)
    one = load_registry(plugin_dirs=[first], builtins=(), entry_points=False)
    two = load_registry(plugin_dirs=[second], builtins=(), entry_points=False)
    again = load_registry(plugin_dirs=[first], builtins=(), entry_points=False)
    assert sorted(one.nodes) == ["WhichA"] and sorted(again.nodes) == ["WhichA"]
    assert sorted(two.nodes) == ["WhichB"]
    assert two.plugins[0].location == str(second / "sameplug")
    assert one.nodes["WhichA"] is again.nodes["WhichA"]  # the same path reuses its module


def test_hook_functions_without_hookimpl_fail_the_plugin_naming_them(plugins_dir: Path) -> None:
    write(plugins_dir, "undecorated", '''
        from graph_runtime import Node, Output, hookimpl

        class Undecorated(Node):
            outputs = [Output("STRING")]
            def run(self, ctx): return ("x",)

        def nodeloom_register_nodes():
            return [Undecorated]

        def nodeloom_settings(options):
            return {}

        def nodeloom_helper_not_a_hook_but_named_so():
            return None
    ''')
    registry = load_registry(plugin_dirs=[plugins_dir], builtins=(), entry_points=False)
    (record,) = registry.plugins
    assert record.status == "failed" and registry.nodes == {}
    assert "nodeloom_register_nodes" in record.error and "nodeloom_settings" in record.error
    assert "@hookimpl" in record.error
