"""The ``nodeloom`` command: run workflows headless, in batches, and inspect nodes and plugins.

Exit codes: 0 ok, 1 runtime failure (a node raised), 2 invalid workflow (format or validation
errors, listed all at once), 130 interrupted (Ctrl-C stops the run at the next node boundary or
progress report).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import traceback
from pathlib import Path
from typing import Any, TextIO

from graph_runtime.context import InterruptFlag
from graph_runtime.executor import RunResult
from graph_runtime.folders import FolderPaths
from graph_runtime.formats import WorkflowFormatError
from graph_runtime.batch import add_executor_arguments, cmd_batch, output_location
from graph_runtime.progress import ProgressBars
from graph_runtime.headless import (
    EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, cli_logging, describe_failure, environment,
    load_workflow, output_files, plugin_dirs_of, sigint_sets,
)
from graph_runtime.registry import NodeRegistry, load_plugins
from graph_runtime.validation import WorkflowInvalid

def main(argv: list[str] | None = None) -> int:
    """The ``nodeloom`` command with ``argv`` (default: the process's arguments). Called as the
    process's entry point (no ``argv``), it leaves the interpreter's shutdown nothing to collect."""
    if argv is not None:
        return _main(list(argv))
    code = _main(sys.argv[1:])
    _skip_shutdown_collection()
    return code


def _skip_shutdown_collection() -> None:
    """Move every live object to the permanent generation, so the garbage collection passes of
    interpreter shutdown do not walk the millions of objects torch, diffusers and transformers
    leave behind (1-2 s after a run finished). Shutdown is otherwise normal: atexit handlers run,
    buffers flush, files close; only the process's own entry point does this."""
    sys.stdout.flush()
    sys.stderr.flush()
    gc.freeze()


def _main(argv: list[str]) -> int:
    verbose = any(arg in ("-v", "--verbose") for arg in argv)
    with cli_logging(verbose=verbose):
        # As pytest does: the plugins are loaded first (their options and subcommands join the
        # parser), the plugin folders being found by a first pass over the arguments.
        registry = load_plugins(plugin_dirs=plugin_dirs_of(*_plugins_dirs_given(argv)))
        parser = build_parser(registry)
        args, unknown = parser.parse_known_args(argv)
        if getattr(args, "passthrough", False):  # a command reading its arguments with its own parser
            args.arguments = argv[argv.index(args.command) + 1:]
        elif unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        if args.command is None:
            parser.print_help()
            return EXIT_INVALID
        if getattr(args, "command_plugin", None) is None:
            return _call_handler(args, verbose=verbose)
    return _call_handler(args, verbose=verbose)  # a plugin's command sets up logging its own way


def _call_handler(args: argparse.Namespace, *, verbose: bool) -> int:
    """Run the command's handler; a mistake in it (or a plugin command without one) is one line
    naming the command and the plugin that added it, exit 1 (the traceback only with -v)."""
    plugin = getattr(args, "command_plugin", None)
    where = f"command {args.command!r}" + (f" (added by plugin {plugin})" if plugin else "")
    handler = getattr(args, "handler", None)
    if handler is None:
        print(f"nodeloom: {where} has no handler: its parser needs set_defaults(handler=FUNCTION)",
              file=sys.stderr)
        return EXIT_FAILED
    try:
        code = handler(args)
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside a run
        print("aborted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - reported in one line; the traceback with -v
        print(f"nodeloom: {where} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if verbose:
            traceback.print_exc()
        return EXIT_FAILED
    return EXIT_OK if code is None else int(code)


# -- argument parsing ------------------------------------------------------------------------


def _plugins_dirs_given(argv: list[str]) -> tuple[list[Path] | None, Path]:
    """The plugin folders (``--plugins-dir``, or serve's older ``--plugins``) and ``--base`` as
    given anywhere on the command line, so the plugins found there can add their options."""
    first = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    first.add_argument("--plugins-dir", "--plugins", dest="plugins_dir", type=Path, action="append")
    first.add_argument("--base", type=Path, default=Path.cwd())
    given = first.parse_known_args(argv)[0]
    return given.plugins_dir, given.base


def build_parser(registry: NodeRegistry) -> argparse.ArgumentParser:
    """The ``nodeloom`` parser: the built-in commands, plus the options (``nodeloom_add_options``)
    and subcommands (``nodeloom_add_commands``, e.g. ``serve``, ``models``) of the plugins in
    ``registry``, which every handler finds as ``args.registry``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--base", type=Path, default=Path.cwd(),
                        help="folder holding input/, output/, temp/, user/ (and models/); default: cwd")
    common.add_argument("--models", type=Path, help="models root (default: BASE/models)")
    common.add_argument("--extra-model-paths", type=Path, metavar="YAML",
                        help="ComfyUI extra_model_paths.yaml with more model folders")
    common.add_argument("--plugins-dir", type=Path, action="append", metavar="DIR",
                        help="folder of plugin packages (repeatable; default: ./plugins if it exists)")
    common.add_argument("--cache-policy", choices=("lru", "none"), default="lru")
    common.add_argument("--cache-max-entries", type=int, default=1024)
    common.add_argument("--cache-max-bytes", type=int, default=4 << 30)
    # The plugins' options (the diffusion pack's --device, --vram-budget, …), shared with serve.
    plugin_options = argparse.ArgumentParser(add_help=False)
    registry.call_each("nodeloom_add_options", parser=plugin_options)
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", help="show Python tracebacks")
    shared = [common, plugin_options, verbose]

    runs = argparse.ArgumentParser(add_help=False)
    runs.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE",
                      help="override an input, e.g. --set 3.seed=42 --set 6.text='a red mug'")
    runs.add_argument("--out", type=output_location,
                      help="output folder (default: BASE/output); batch --executor ray also takes an fsspec URL")
    runs.add_argument("--no-progress", action="store_true", help="no progress bars")

    parser = argparse.ArgumentParser(prog="nodeloom", description=__doc__.splitlines()[0].replace("``", ""))
    # Also before COMMAND, for the plugins' own commands (``nodeloom --plugins-dir DIR hello``);
    # documented with the commands' own --plugins-dir.
    parser.add_argument("--plugins-dir", type=Path, action="append", help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(registry=registry)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", parents=[*shared, runs], help="validate and run one workflow")
    run.add_argument("workflow", nargs="?", type=Path, help="workflow JSON (API or UI format) or PNG")
    run.add_argument("--from-png", type=Path, metavar="PNG", help="run the workflow embedded in a PNG")
    run.add_argument("--partial", action="store_true",
                     help="run the outputs that are valid and report the others (as the server does); "
                          "without it an invalid output refuses the whole workflow (exit 2)")
    run.set_defaults(handler=_cmd_run)

    batch = sub.add_parser("batch", parents=[*shared, runs],
                           help="run a workflow once per line of a params file, or many workflow files")
    batch.add_argument("source", help="a workflow file (with --params), or a folder or glob of workflows")
    batch.add_argument("--params", type=Path, metavar="FILE.jsonl",
                       help='one JSON object of overrides per line: {"3.seed": 42, "_id": "name"}')
    batch.add_argument("--manifest", type=Path,
                       help="JSONL manifest of results; items already done in it are skipped "
                            "(default: OUT/manifest.jsonl)")
    add_executor_arguments(batch)
    batch.set_defaults(handler=cmd_batch)

    validate = sub.add_parser("validate", parents=shared, help="check a workflow without running it")
    validate.add_argument("workflow", type=Path)
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE")
    validate.add_argument("--json", action="store_true", help="ComfyUI's {error, node_errors} body")
    validate.set_defaults(handler=_cmd_validate)

    convert = sub.add_parser("convert", parents=shared, help="print the API format of a workflow")
    convert.add_argument("workflow", type=Path, help="UI-format JSON, API JSON or PNG")
    convert.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")
    convert.set_defaults(handler=_cmd_convert)

    nodes = sub.add_parser("nodes", parents=shared, help="list node classes and their plugins")
    nodes.add_argument("--json", action="store_true", help="full /object_info schemas plus plugin")
    nodes.set_defaults(handler=_cmd_nodes)

    plugins = sub.add_parser("plugins", parents=shared, help="list plugins and their status")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(handler=_cmd_plugins)

    _add_plugin_commands(registry, sub, [plugin_options])
    return parser


def _add_plugin_commands(registry: NodeRegistry, sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """The plugins' subcommands, each knowing (``args.command_plugin``) the plugin that added it."""
    builtin = set(sub.choices)
    added: dict[str, str] = {}

    def claim(plugin_name: str) -> None:
        for name in set(sub.choices) - builtin - added.keys():
            added[name] = plugin_name

    registry.call_each("nodeloom_add_commands", after=claim, subparsers=sub, parents=parents)
    for name, plugin_name in added.items():
        sub.choices[name].set_defaults(command_plugin=plugin_name)


# -- run -------------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    source = args.from_png or args.workflow
    if source is None or (args.from_png and args.workflow):
        print("nodeloom run: give one workflow file or --from-png PNG", file=sys.stderr)
        return EXIT_INVALID
    if isinstance(args.out, str):
        print(f"nodeloom run: --out {args.out}: a URL is for batch --executor ray; give a folder", file=sys.stderr)
        return EXIT_INVALID
    env = environment(args)
    try:
        workflow = load_workflow(source, env, args.overrides)
    except WorkflowFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    targets = None
    if args.partial:
        checked = env.runtime.validate(workflow.prompt)
        if not checked.ok and (targets := checked.runnable_outputs() or None):
            print(f"--partial: running outputs {', '.join(targets)} only\n{checked.format()}", file=sys.stderr)
    interrupt = InterruptFlag()
    with ProgressBars(enabled=not args.no_progress) as bars, sigint_sets(interrupt):
        try:
            result = env.runtime.execute(workflow.prompt, extra_data=workflow.extra_data, targets=targets,
                                         listeners=[bars], interrupt=interrupt)
        except WorkflowInvalid as exc:
            bars.close()
            print(exc.result.format(), file=sys.stderr)
            return EXIT_INVALID
    return _report(result, env.folders, verbose=args.verbose, out=sys.stdout)


def _report(result: RunResult, folders: FolderPaths, *, verbose: bool, out: TextIO) -> int:
    if result.status == "interrupted":
        print(f"interrupted after {len(result.executed)} node(s)", file=sys.stderr)
        return EXIT_INTERRUPTED
    if result.status == "error":
        assert result.error is not None
        print(describe_failure(result.error), file=sys.stderr)
        if verbose:
            print("".join(result.error.traceback), file=sys.stderr)
        return EXIT_FAILED
    for path in output_files(result, folders):
        print(f"wrote {path}", file=out)
    print(f"done in {result.seconds:.2f} s: {len(result.executed)} node(s) executed, "
          f"{len(result.cached)} cached", file=out)
    return EXIT_OK


# -- validate / convert / nodes / plugins -----------------------------------------------------


def _cmd_validate(args: argparse.Namespace) -> int:
    env = environment(args)
    try:
        workflow = load_workflow(args.workflow, env, args.overrides)
    except WorkflowFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    result = env.runtime.validate(workflow.prompt)
    if args.json:
        print(json.dumps(result.to_comfy(), indent=2, default=str))
    elif result.ok:
        print(f"valid: {len(workflow.prompt)} node(s); outputs {', '.join(result.outputs)}")
    else:
        print(result.format(), file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_INVALID


def _cmd_convert(args: argparse.Namespace) -> int:
    env = environment(args)
    try:
        workflow = load_workflow(args.workflow, env, [])
    except WorkflowFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    text = json.dumps(workflow.prompt, indent=2, ensure_ascii=False)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return EXIT_OK


def _cmd_nodes(args: argparse.Namespace) -> int:
    env = environment(args)
    registry = env.registry
    if args.json:
        from graph_runtime.schema import object_info

        info = object_info(registry, env.runtime.hook_context)
        for name, schema in info.items():
            schema["plugin"] = registry.origin.get(name)
        print(json.dumps(info, indent=2, default=str))
        return EXIT_OK
    width = max((len(name) for name in registry.nodes), default=10)
    for name in sorted(registry.nodes):
        cls = registry.nodes[name]
        print(f"{name:<{width}}  {cls.category:<24}  {registry.origin.get(name, '?')}")
    return EXIT_OK


def _cmd_plugins(args: argparse.Namespace) -> int:
    env = environment(args)
    if args.json:
        print(json.dumps([record.as_dict() for record in env.registry.plugins], indent=2))
        return EXIT_OK
    for record in env.registry.plugins:
        line = f"{record.name:<32} {record.source:<12} {record.status:<7} {len(record.nodes)} node(s)"
        if record.error:
            line += f"  error: {record.error}"
        print(line)
        for node, reason in record.skipped.items():
            print(f"    skipped {node}: {reason}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
