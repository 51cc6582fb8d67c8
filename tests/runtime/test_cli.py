"""The nodeloom command, called in-process through main(argv), with a plugin folder of test nodes."""

from __future__ import annotations

import json
import struct
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from graph_runtime.cli import main

DATA = Path(__file__).parent / "data" / "ui"

PLUGIN = '''
import os
import signal
from pathlib import Path

from graph_runtime import Context, Int, Link, Node, Output, Result, String, hookimpl


class CliNumber(Node):
    inputs = [Int("value", 1, min=-100, max=100)]
    outputs = [Output("INT")]

    def run(self, ctx: Context, *, value: int):
        return (value,)


class CliDivide(Node):
    inputs = [Link("x", "INT"), Int("by", 1, min=-100, max=100)]
    outputs = [Output("INT")]

    def run(self, ctx: Context, *, x: int, by: int):
        return (x // by,)


class CliCountdown(Node):
    """Reports progress; at step ``ctrl_c`` it sends this process a Ctrl-C."""

    inputs = [Link("x", "INT"), Int("steps", 3, min=1, max=50), Int("ctrl_c", 0, min=0, max=50)]
    outputs = [Output("INT")]

    def run(self, ctx: Context, *, x: int, steps: int, ctrl_c: int):
        for step in range(1, steps + 1):
            if step == ctrl_c:
                os.kill(os.getpid(), signal.SIGINT)
            ctx.progress(step, steps)
        return (x,)


class CliSave(Node):
    output_node = True
    inputs = [Link("value", "INT"), String("filename_prefix", "result")]
    outputs = []

    def run(self, ctx: Context, *, value: int, filename_prefix: str):
        folder = Path(ctx.folders.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{filename_prefix}.txt"
        (folder / name).write_text(str(value))
        return Result(ui={"images": [{"filename": name, "subfolder": "", "type": "output"}]})


@hookimpl
def nodeloom_register_nodes():
    return [CliNumber, CliDivide, CliCountdown, CliSave]
'''

COMFYISH = '''
from graph_runtime import hookimpl
from runtime.comfy_like import NODES


@hookimpl
def nodeloom_register_nodes():
    return NODES
'''

WORKFLOW = {
    "1": {"class_type": "CliNumber", "inputs": {"value": 84}},
    "2": {"class_type": "CliDivide", "inputs": {"x": ["1", 0], "by": 2}},
    "3": {"class_type": "CliCountdown", "inputs": {"x": ["2", 0], "steps": 3, "ctrl_c": 0}},
    "4": {"class_type": "CliSave", "inputs": {"value": ["3", 0], "filename_prefix": "answer"}},
}


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "clitoys.py").write_text(PLUGIN)
    (plugins / "comfyish.py").write_text(COMFYISH)
    (plugins / "broken.py").write_text("raise ImportError('needs a GPU driver')\n")
    (tmp_path / "wf.json").write_text(json.dumps(WORKFLOW))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("plugins.")]:
        del sys.modules[name]


def nodeloom(base: Path, *args: str) -> int:
    return main([args[0], "--base", str(base), "--plugins-dir", str(base / "plugins"), *args[1:]])


def run(base: Path, *args: str) -> int:
    return nodeloom(base, "run", *args, "--no-progress")


def test_run_writes_outputs(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(base, str(base / "wf.json")) == 0
    assert (base / "output" / "answer.txt").read_text() == "42"
    out, err = capsys.readouterr()
    assert f"wrote {base / 'output' / 'answer.txt'}" in out and "4 node(s) executed" in out
    assert "plugin plugins.broken skipped: ImportError: needs a GPU driver" in err


def test_set_overrides_and_out_folder(base: Path) -> None:
    out = base / "elsewhere"
    assert run(base, str(base / "wf.json"), "--set", "1.value=-9", "--set", '4.filename_prefix="odd"',
               "--out", str(out)) == 0
    assert (out / "odd.txt").read_text() == "-5"


def test_progress_bars_do_not_break_a_run(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert nodeloom(base, "run", str(base / "wf.json")) == 0
    err = capsys.readouterr().err  # not a terminal: one plain line per node, no redrawn bars
    assert "node 1 CliNumber" in err and "[100%] workflow finished" in err


def test_invalid_workflow_exits_2_listing_every_error(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(base, str(base / "wf.json"), "--set", "1.value=500", "--set", "2.by=lots") == 2
    err = capsys.readouterr().err
    assert "2 errors in the workflow:" in err
    assert "node 1 (CliNumber), input 'value': Value 500 bigger than max of 100" in err
    assert "node 2 (CliDivide), input 'by': Failed to convert" in err
    assert not (base / "output" / "answer.txt").exists()


def test_partial_runs_the_valid_outputs_and_reports_the_others(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mixed = {**WORKFLOW, "5": {"class_type": "CliNumber", "inputs": {"value": 500}},
             "6": {"class_type": "CliSave", "inputs": {"value": ["5", 0], "filename_prefix": "broken"}}}
    (base / "mixed.json").write_text(json.dumps(mixed))
    assert run(base, str(base / "mixed.json")) == 2  # without the flag: refused whole
    assert not (base / "output" / "answer.txt").exists()
    assert run(base, str(base / "mixed.json"), "--partial") == 0
    assert (base / "output" / "answer.txt").read_text() == "42"
    assert not (base / "output" / "broken.txt").exists()
    err = capsys.readouterr().err
    assert "running outputs 4 only" in err and "node 5 (CliNumber), input 'value': Value 500 bigger than max" in err
    (base / "bad.json").write_text(json.dumps({k: mixed[k] for k in ("5", "6")}))
    assert run(base, str(base / "bad.json"), "--partial") == 2  # nothing valid to run


@pytest.mark.parametrize("content, message", [("{oops", "not valid JSON"), (None, "no such file")])
def test_unreadable_workflow_exits_2(base: Path, capsys: pytest.CaptureFixture[str], content: str | None,
                                     message: str) -> None:
    path = base / "bad.json"
    if content is not None:
        path.write_text(content)
    assert run(base, str(path)) == 2
    assert message in capsys.readouterr().err


def test_bad_override_exits_2(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(base, str(base / "wf.json"), "--set", "77.value=1") == 2
    assert "no node '77'" in capsys.readouterr().err


def test_override_of_an_input_the_node_does_not_have_exits_2(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Undeclared inputs are ignored by the run: a misspelt --set would change nothing, unsaid."""
    assert run(base, str(base / "wf.json"), "--set", "2.bye=3") == 2
    err = capsys.readouterr().err
    assert "override '2.bye=3': node 2 (CliDivide) has no input 'bye' (its inputs: " in err and "by" in err
    assert not (base / "output" / "answer.txt").exists()


def test_node_failure_exits_1_naming_the_node_without_traceback(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(base, str(base / "wf.json"), "--set", "2.by=0") == 1
    err = capsys.readouterr().err
    assert "node 2 (CliDivide) failed: ZeroDivisionError: integer division or modulo by zero" in err
    assert "Traceback" not in err
    assert run(base, str(base / "wf.json"), "--set", "2.by=0", "--verbose") == 1
    assert "Traceback" in capsys.readouterr().err


def test_ctrl_c_interrupts_the_run_with_130(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(base, str(base / "wf.json"), "--set", "3.ctrl_c=2", "--set", "3.steps=20") == 130
    assert "interrupted" in capsys.readouterr().err
    assert not (base / "output" / "answer.txt").exists()


def test_validate(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert nodeloom(base, "validate", str(base / "wf.json")) == 0
    assert "valid: 4 node(s); outputs 4" in capsys.readouterr().out
    assert nodeloom(base, "validate", str(base / "wf.json"), "--set", "2.by=1000", "--json") == 2
    body = json.loads(capsys.readouterr().out)
    assert body["node_errors"]["2"]["errors"][0]["type"] == "value_bigger_than_max"


def test_batch_params_with_resumable_manifest(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = base / "params.jsonl"
    params.write_text('{"1.value": 10, "4.filename_prefix": "ten", "_id": "ten"}\n'
                      '{"2.by": 0, "4.filename_prefix": "zero"}\n\n'
                      '{"1.value": 30, "4.filename_prefix": "thirty"}\n'
                      '{"1.value": 3000}\n')
    manifest = base / "manifest.jsonl"
    args = ("batch", str(base / "wf.json"), "--params", str(params), "--manifest", str(manifest))
    assert nodeloom(base, *args) == 1
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [(r["item"], r["status"]) for r in records] == [
        ("ten", "success"), ("line 2", "error"), ("line 4", "success"), ("line 5", "invalid")]
    assert records[0]["outputs"] == [str(base / "output" / "ten.txt")]
    assert "ZeroDivisionError" in records[1]["error"] and "bigger than max" in records[3]["error"]
    assert all(set(r) == {"item", "status", "outputs", "error", "seconds"} for r in records)
    assert (base / "output" / "thirty.txt").read_text() == "15"
    capsys.readouterr()
    # Re-run: finished items are skipped, failed ones tried again.
    (base / "output" / "ten.txt").unlink()
    assert nodeloom(base, *args) == 1
    out = capsys.readouterr().out
    assert "ten: already done, skipped" in out and "line 4: already done, skipped" in out
    assert not (base / "output" / "ten.txt").exists()
    assert len(manifest.read_text().splitlines()) == 6


def test_batch_over_a_folder_of_workflows(base: Path) -> None:
    folder = base / "many"
    folder.mkdir()
    for value in (2, 4):
        workflow = json.loads(json.dumps(WORKFLOW))
        workflow["1"]["inputs"]["value"] = value
        workflow["4"]["inputs"]["filename_prefix"] = f"v{value}"
        (folder / f"w{value}.json").write_text(json.dumps(workflow))
    assert nodeloom(base, "batch", str(folder)) == 0
    manifest = base / "output" / "manifest.jsonl"
    assert [json.loads(line)["status"] for line in manifest.read_text().splitlines()] == ["success", "success"]
    assert (base / "output" / "v4.txt").read_text() == "2"
    assert nodeloom(base, "batch", str(folder / "*.json")) == 0  # a glob; both already done
    assert len(manifest.read_text().splitlines()) == 2


def test_convert_prints_the_api_format(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert nodeloom(base, "convert", str(DATA / "invert_and_scale_v04.json")) == 0
    prompt = json.loads(capsys.readouterr().out)
    assert sorted(prompt) == ["1", "3", "4", "5"] and prompt["4"]["inputs"]["width"] == 768
    target = base / "api.json"
    assert nodeloom(base, "convert", str(DATA / "blur_invert_v1.json"), "-o", str(target)) == 0
    assert json.loads(target.read_text())["12"]["inputs"] == {"image": ["11", 0]}


def test_nodes_and_plugins_listings(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert nodeloom(base, "nodes", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["CliDivide"]["plugin"] == "plugins.clitoys"
    assert info["CliDivide"]["input"]["required"]["by"] == ["INT", {"default": 1, "min": -100, "max": 100}]
    assert nodeloom(base, "nodes") == 0
    assert any(line.startswith("CliSave") and "plugins.clitoys" in line
               for line in capsys.readouterr().out.splitlines())
    assert nodeloom(base, "plugins", "--json") == 0
    plugins = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert plugins["plugins.broken"]["status"] == "failed"
    assert plugins["plugins.clitoys"]["nodes"] == ["CliNumber", "CliDivide", "CliCountdown", "CliSave"]
    assert nodeloom(base, "plugins") == 0
    assert "error: ImportError: needs a GPU driver" in capsys.readouterr().out


def png_with_text(path: Path, texts: dict[str, str]) -> None:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x00")
    body = b"".join(chunk(b"tEXt", k.encode() + b"\x00" + v.encode("latin-1")) for k, v in texts.items())
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + body + chunk(b"IDAT", pixels)
                     + chunk(b"IEND", b""))


def test_run_from_png(base: Path) -> None:
    png = base / "out.png"
    png_with_text(png, {"prompt": json.dumps(WORKFLOW), "workflow": json.dumps({"nodes": [], "links": []})})
    assert run(base, "--from-png", str(png), "--set", "1.value=20") == 0
    assert (base / "output" / "answer.txt").read_text() == "10"


def test_usage_errors(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert run(base) == 2
    assert "give one workflow file" in capsys.readouterr().err


def test_a_plugin_command_that_cannot_load_is_reported(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The server plugin's serve command needs server.cli: without it the other commands still
    work, and asking for serve names the plugin and the reason."""
    monkeypatch.setitem(sys.modules, "server.cli", None)  # importing it raises ImportError
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--port", "1"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "plugin server: nodeloom_add_commands failed: ModuleNotFoundError" in err
    assert "invalid choice: 'serve'" in err


def test_models_dispatches_its_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    fake = type(sys)("nodes.diffusion.zoo")
    fake.main = lambda argv: seen.append(argv) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "nodes.diffusion.zoo", fake)
    assert main(["models", "tiny", "--root", "x"]) == 0
    assert seen == [["tiny", "--root", "x"]]


def test_real_process_exit_code_for_an_invalid_workflow(base: Path) -> None:
    """The same through a fresh interpreter, as a shell script sees it."""
    import subprocess

    code = "import sys; from graph_runtime.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "validate", str(base / "wf.json"), "--base", str(base),
         "--plugins-dir", str(base / "plugins"), "--set", "1.value=101"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "node 1 (CliNumber), input 'value': Value 101 bigger than max of 100" in result.stderr


def test_model_manager_options_reach_the_nodes(tmp_path: Path) -> None:
    """--device/--ram-budget/--vram-budget/... (the diffusion pack's options) end up where the
    diffusion nodes read them."""
    from graph_runtime.cli import build_parser
    from graph_runtime.headless import environment
    from graph_runtime.registry import load_plugins

    args = build_parser(load_plugins()).parse_args(["validate", "w.json", "--base", str(tmp_path), "--plugins-dir", str(tmp_path),
                                 "--device", "cpu", "--ram-budget", "2GB", "--vram-budget", "512MB",
                                 "--channels-last"])
    settings = environment(args).runtime.services.get("settings")
    assert settings == {"device": "cpu", "ram_budget": "2GB", "vram_budget": "512MB",
                        "channels_last": True, "compile": False}


# -- commands and options from plugins -------------------------------------------------------

COMMAND_PLUGIN = '''
from graph_runtime import hookimpl


@hookimpl
def nodeloom_add_options(parser):
    parser.add_argument("--shout", action="store_true", help="louder nodes")


@hookimpl
def nodeloom_settings(options):
    return {"shout": options.get("shout")}


@hookimpl
def nodeloom_add_commands(subparsers, parents):
    hello = subparsers.add_parser("hello", parents=parents, help="say hello")
    hello.add_argument("--name", default="world")
    hello.set_defaults(handler=lambda args: print(f"hello {args.name} shout={args.shout}") or 7)
'''


def test_a_folder_plugin_adds_a_command_and_shared_options(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (base / "plugins" / "hello.py").write_text(COMMAND_PLUGIN)
    assert main(["--plugins-dir", str(base / "plugins"), "hello", "--name", "you", "--shout"]) == 7
    assert "hello you shout=True" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["run", "--help", "--plugins-dir", str(base / "plugins")])
    assert "--shout" in capsys.readouterr().out


def test_plugin_settings_reach_the_nodes(base: Path) -> None:
    from graph_runtime.cli import build_parser
    from graph_runtime.headless import environment
    from graph_runtime.registry import load_plugins

    (base / "plugins" / "hello.py").write_text(COMMAND_PLUGIN)
    registry = load_plugins(plugin_dirs=[base / "plugins"], entry_points=False)
    args = build_parser(registry).parse_args(["validate", "w.json", "--base", str(base), "--shout"])
    assert environment(args).runtime.services.get("settings") == {"shout": True}


def test_serve_help_lists_serves_own_and_the_shared_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--host", "--port", "--token", "--devices", "--base", "--node-packs", "--plugins",
                 "--frontend-root", "--log-level", "--device", "--vram-budget", "--compile"):
        assert flag in out, flag


def test_serve_runs_the_server_with_the_plugins_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import server.cli

    seen: dict[str, Any] = {}

    def fake_settings(args: Any, model_settings: dict[str, Any]) -> Any:
        seen.update(model_settings=model_settings, base=args.base, packs=args.node_packs)
        raise ValueError("stop before listening")

    monkeypatch.setattr(server.cli, "settings_from", fake_settings)
    assert main(["serve", "--base", str(tmp_path), "--node-packs", "nodes.core", "--vram-budget", "1GB"]) == 2
    assert seen["base"] == tmp_path and seen["packs"] == "nodes.core"
    assert seen["model_settings"]["vram_budget"] == "1GB" and seen["model_settings"]["compile"] is False


def test_building_the_parser_imports_neither_torch_nor_diffusers(tmp_path: Path) -> None:
    import subprocess

    code = ("import sys; from graph_runtime.cli import build_parser; from graph_runtime import load_plugins; "
            "build_parser(load_plugins()); print(sorted(m for m in ('torch', 'diffusers', 'transformers') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=tmp_path, timeout=120)
    assert result.stdout.strip() == "[]"


def test_the_runtime_names_neither_nodes_nor_server() -> None:
    """graph_runtime reaches the packs and the server only through plugin hooks."""
    import ast

    import graph_runtime

    for path in Path(graph_runtime.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value]
            for name in names:
                root = name.split(".")[0]
                assert not (root in ("nodes", "server") and (name != root or isinstance(node, ast.Import | ast.ImportFrom))), \
                    f"{path.name} names {name!r}"
