"""``nodeloom serve``'s command line: the plugin folder named as for the other commands, a plugin's
own option after ``serve``, and folders resolved where the command was given."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from graph_runtime.cli import _plugins_dirs_given
from graph_runtime.headless import plugin_dirs_of
from server.cli import settings_from
from tests.server.conftest import serve_args

OPTION_PLUGIN = '''
from graph_runtime import hookimpl

@hookimpl
def nodeloom_add_options(parser):
    parser.add_argument("--myplug-level", type=int, default=1)

@hookimpl
def nodeloom_settings(options):
    return {"myplug_level": options.get("myplug_level")}
'''


def _serve_args(argv: list[str]) -> argparse.Namespace:
    # The plugin folders as the command finds them (a first pass over the arguments).
    return serve_args(argv, plugin_dirs_of(*_plugins_dirs_given(argv)))


def test_plugins_dir_after_serve_brings_the_plugins_options(tmp_path: Path) -> None:
    plugins = tmp_path / "myplugins"
    plugins.mkdir()
    (plugins / "myplug.py").write_text(OPTION_PLUGIN)
    args = _serve_args(["--plugins-dir", str(plugins), "--myplug-level", "3"])
    assert args.myplug_level == 3
    assert args.registry.settings(vars(args))["myplug_level"] == 3
    assert settings_from(args, {}).plugin_dirs == [plugins.resolve()]


def test_older_plugins_flag_still_works(tmp_path: Path) -> None:
    args = _serve_args(["--plugins", str(tmp_path)])
    assert settings_from(args, {}).plugin_dirs == [tmp_path.resolve()]


def test_relative_folders_are_resolved_where_the_command_was_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "site" / "plugins").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    args = _serve_args(["--base", "site", "--models", "zoo", "--db", "q.sqlite3"])
    settings = settings_from(args, {})
    assert settings.folders.base == tmp_path / "site"
    assert settings.folders.models_roots == [tmp_path / "zoo"]
    assert settings.db_path == tmp_path / "q.sqlite3"
    # The default plugin folder is BASE/plugins, as for run and batch.
    assert settings.plugin_dirs == [tmp_path / "site" / "plugins"]


@pytest.mark.parametrize("address, said", [
    ("garbage", "--address 'garbage': expected auto, HOST:PORT or ray://HOST:PORT"),
    ("127.0.0.1:{port}", "cannot reach the Ray cluster at '127.0.0.1:{port}': "),
    ("ray://127.0.0.1:{port}", "cannot reach the Ray cluster at 'ray://127.0.0.1:{port}': "),
])
def test_a_wrong_ray_address_is_one_line_before_the_server_starts(
        address: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from graph_runtime.cli import main

    pytest.importorskip("ray")
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = main(["serve", "--executor", "ray", "--address", address.format(port=port), "--base", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and f"nodeloom serve: {said.format(port=port)}" in err
    assert "Traceback" not in err
