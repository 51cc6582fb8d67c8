"""The nodeloom command with misbehaving plugins: each problem is one line, printed once, and the
command goes on (or exits 1 naming the plugin); tracebacks only with -v."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graph_runtime.cli import main

from .test_cli import base, nodeloom  # noqa: F401 - fixture

COMMANDS = '''
from graph_runtime import hookimpl

def _boom(args):
    raise RuntimeError("handler exploded")

@hookimpl
def nodeloom_add_commands(subparsers, parents):
    subparsers.add_parser("nohandler", parents=parents, help="forgot set_defaults")
    subparsers.add_parser("boomcmd", parents=parents, help="raises").set_defaults(handler=_boom)
'''

SETTINGS_RAISE = '''
from graph_runtime import hookimpl

@hookimpl
def nodeloom_settings(options):
    raise KeyError("missing key")
'''

BAD_CHOICES = '''
from graph_runtime import Combo, Node, Output, hookimpl

class BadChoices(Node):
    inputs = [Combo("pick", lambda ctx: 1 / 0)]
    outputs = [Output("STRING")]

    def run(self, ctx, *, pick):
        return (pick,)

@hookimpl
def nodeloom_register_nodes():
    return [BadChoices]
'''


def test_a_plugin_warning_is_printed_once(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert nodeloom(base, "plugins") == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "plugins.broken" in line]
    assert lines == ["warning: plugin plugins.broken skipped: ImportError: needs a GPU driver"]


def test_a_raising_settings_hook_leaves_every_command_working(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (base / "plugins" / "settings_raise.py").write_text(SETTINGS_RAISE)
    assert nodeloom(base, "validate", str(base / "wf.json")) == 0
    assert nodeloom(base, "plugins") == 0
    out, err = capsys.readouterr()
    failure = "plugin plugins.settings_raise: nodeloom_settings failed: KeyError: 'missing key'"
    assert err.count(f"warning: {failure}") == 2 and "Traceback" not in err
    assert "error: nodeloom_settings failed: KeyError: 'missing key'" in out


@pytest.mark.parametrize(("command", "message"), [
    ("nohandler", "nodeloom: command 'nohandler' (added by plugin plugins.commands) has no handler: "
                  "its parser needs set_defaults(handler=FUNCTION)"),
    ("boomcmd", "nodeloom: command 'boomcmd' (added by plugin plugins.commands) failed: "
                "RuntimeError: handler exploded"),
])
def test_a_plugin_command_mistake_is_one_line_naming_command_and_plugin(
        base: Path, capsys: pytest.CaptureFixture[str], command: str, message: str) -> None:
    (base / "plugins" / "commands.py").write_text(COMMANDS)
    assert main(["--plugins-dir", str(base / "plugins"), command]) == 1
    err = capsys.readouterr().err
    assert message in err.splitlines() and "Traceback" not in err


def test_a_raising_plugin_command_shows_its_traceback_with_verbose(
        base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (base / "plugins" / "commands.py").write_text(COMMANDS)
    assert main(["-v", "--plugins-dir", str(base / "plugins"), "boomcmd"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "handler exploded" in err


def test_nodes_json_keeps_a_node_whose_choices_raise(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (base / "plugins" / "badchoices.py").write_text(BAD_CHOICES)
    assert nodeloom(base, "nodes", "--json") == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["BadChoices"]["input"]["required"]["pick"] == [[], {}]
    assert ("warning: node BadChoices, input pick: choices could not be listed: "
            "ZeroDivisionError: division by zero") in err.splitlines()
    assert "Traceback" not in err


def test_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and "The nodeloom command" in out
