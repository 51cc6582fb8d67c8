"""The ``nodeloom`` command: run workflows headless, in batches, and inspect nodes and plugins.

Exit codes: 0 ok, 1 runtime failure (a node raised), 2 invalid workflow (format or validation
errors, listed all at once), 130 interrupted (Ctrl-C stops the run at the next node boundary or
progress report).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from graph_runtime.cache import OutputCache
from graph_runtime.context import InterruptFlag, Services
from graph_runtime.events import Event, Executing, ExecutionError, ExecutionSuccess, Progress
from graph_runtime.executor import RunResult, Runtime
from graph_runtime.folders import FolderPaths, configure
from graph_runtime.formats import Workflow, WorkflowFormatError, apply_overrides, load_workflow_file
from graph_runtime.registry import NodeRegistry, load_registry
from graph_runtime.validation import WorkflowInvalid

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
# Subcommands owned by other packages; their arguments are passed through untouched.
DELEGATED: dict[str, tuple[str, str]] = {
    "models": ("nodes.diffusion.zoo", "write the tiny random-weight model zoo (models tiny)"),
    "serve": ("server.cli", "start the ComfyUI-compatible HTTP and websocket server"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        return _delegate(argv[0], argv[1:])
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return EXIT_INVALID
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside a run
        print("aborted", file=sys.stderr)
        return EXIT_INTERRUPTED


# -- argument parsing ------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
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
    add_model_options(common)
    common.add_argument("-v", "--verbose", action="store_true", help="show Python tracebacks")

    runs = argparse.ArgumentParser(add_help=False)
    runs.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE",
                      help="override an input, e.g. --set 3.seed=42 --set 6.text='a red mug'")
    runs.add_argument("--out", type=Path, help="output folder (default: BASE/output)")
    runs.add_argument("--no-progress", action="store_true", help="no progress bars")

    parser = argparse.ArgumentParser(prog="nodeloom", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", parents=[common, runs], help="validate and run one workflow")
    run.add_argument("workflow", nargs="?", type=Path, help="workflow JSON (API or UI format) or PNG")
    run.add_argument("--from-png", type=Path, metavar="PNG", help="run the workflow embedded in a PNG")
    run.set_defaults(handler=_cmd_run)

    batch = sub.add_parser("batch", parents=[common, runs],
                           help="run a workflow once per line of a params file, or many workflow files")
    batch.add_argument("source", help="a workflow file (with --params), or a folder or glob of workflows")
    batch.add_argument("--params", type=Path, metavar="FILE.jsonl",
                       help='one JSON object of overrides per line: {"3.seed": 42, "_id": "name"}')
    batch.add_argument("--manifest", type=Path,
                       help="JSONL manifest of results; items already done in it are skipped "
                            "(default: OUT/manifest.jsonl)")
    batch.set_defaults(handler=_cmd_batch)

    validate = sub.add_parser("validate", parents=[common], help="check a workflow without running it")
    validate.add_argument("workflow", type=Path)
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE")
    validate.add_argument("--json", action="store_true", help="ComfyUI's {error, node_errors} body")
    validate.set_defaults(handler=_cmd_validate)

    convert = sub.add_parser("convert", parents=[common], help="print the API format of a workflow")
    convert.add_argument("workflow", type=Path, help="UI-format JSON, API JSON or PNG")
    convert.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")
    convert.set_defaults(handler=_cmd_convert)

    nodes = sub.add_parser("nodes", parents=[common], help="list node classes and their plugins")
    nodes.add_argument("--json", action="store_true", help="full /object_info schemas plus plugin")
    nodes.set_defaults(handler=_cmd_nodes)

    plugins = sub.add_parser("plugins", parents=[common], help="list plugins and their status")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(handler=_cmd_plugins)

    for name, (_, summary) in DELEGATED.items():
        sub.add_parser(name, help=summary, add_help=False)
    return parser


def _delegate(command: str, argv: list[str]) -> int:
    module_name = DELEGATED[command][0]
    try:
        module = __import__(module_name, fromlist=["main"])
    except ImportError as exc:
        print(f"nodeloom {command}: not available ({exc})", file=sys.stderr)
        return EXIT_FAILED
    return int(module.main(argv) or 0)


# -- environment -----------------------------------------------------------------------------


@dataclass
class _Env:
    registry: NodeRegistry
    runtime: Runtime
    folders: FolderPaths


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options for the model manager of the diffusion nodes (shared with ``nodeloom serve``)."""
    parser.add_argument("--device", help="execution device, e.g. cpu or cuda:0 (default: cuda if present)")
    parser.add_argument("--ram-budget", metavar="SIZE", help="RAM for loaded models, e.g. 8GB (default: unbounded)")
    parser.add_argument("--vram-budget", metavar="SIZE", help="GPU memory for loaded models, e.g. 6GB")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format for UNet/VAE")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (slow first run)")


def model_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What nodes read from ``ctx.services.get("settings")``."""
    return {"device": args.device, "ram_budget": args.ram_budget, "vram_budget": args.vram_budget,
            "channels_last": args.channels_last, "compile": args.compile}


def _environment(args: argparse.Namespace) -> _Env:
    base = Path(args.base).resolve()
    folders = FolderPaths(base=base, models_roots=[Path(args.models).resolve()] if args.models else [],
                          output_dir=getattr(args, "out", None))
    if args.extra_model_paths:
        folders.load_extra_model_paths(args.extra_model_paths)
    configure(folders)
    plugin_dirs = args.plugins_dir if args.plugins_dir else [p for p in [Path("plugins")] if p.is_dir()]
    registry = load_registry(plugin_dirs=plugin_dirs)
    registry.startup({"base": str(base), "models": [str(r) for r in folders.models_roots]})
    for record in registry.plugins:
        if record.status == "failed":
            print(f"warning: plugin {record.name} skipped: {record.error}", file=sys.stderr)
        for node, reason in record.skipped.items():
            print(f"warning: plugin {record.name}: node {node} skipped: {reason}", file=sys.stderr)
    cache = OutputCache(policy=args.cache_policy, max_entries=args.cache_max_entries,
                        max_bytes=args.cache_max_bytes)
    services = Services(settings=model_settings(args))
    return _Env(registry, Runtime(registry, cache=cache, folders=folders, services=services), folders)


def _load(path: Path, registry: NodeRegistry, overrides: list[str]) -> Workflow:
    """Read and override a workflow; raises WorkflowFormatError for anything unreadable."""
    if not path.exists():
        raise WorkflowFormatError(f"{path}: no such file")
    workflow = load_workflow_file(path, registry)
    if overrides:
        workflow.prompt = apply_overrides(workflow.prompt, overrides)
    return workflow


# -- run -------------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    source = args.from_png or args.workflow
    if source is None or (args.from_png and args.workflow):
        print("nodeloom run: give one workflow file or --from-png PNG", file=sys.stderr)
        return EXIT_INVALID
    env = _environment(args)
    try:
        workflow = _load(source, env.registry, args.overrides)
    except WorkflowFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    interrupt = InterruptFlag()
    with _ProgressBars(enabled=not args.no_progress) as bars, _sigint_sets(interrupt):
        try:
            result = env.runtime.execute(workflow.prompt, extra_data=workflow.extra_data,
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


def describe_failure(error: ExecutionError) -> str:
    return (f"node {error.node_id} ({error.node_type}) failed: "
            f"{error.exception_type}: {error.exception_message}")


def output_files(result: RunResult, folders: FolderPaths) -> list[str]:
    """Paths of the files the output nodes reported ({"images": [{filename, subfolder, type}]})."""
    paths: list[str] = []
    for ui in result.outputs.values():
        for items in ui.values():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and "filename" in item:
                    try:
                        folder = folders.directory_for(item.get("type", "output"))
                    except ValueError:
                        continue
                    paths.append(str(folder / item.get("subfolder", "") / item["filename"]))
    return paths


@contextlib.contextmanager
def _sigint_sets(flag: InterruptFlag) -> Iterator[None]:
    """While running, Ctrl-C asks the run to stop (at the next node boundary or progress report)
    instead of killing the process mid-write; a second Ctrl-C kills as usual."""
    def handler(signum: int, frame: Any) -> None:
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()
        print("\ninterrupting… (Ctrl-C again to abort)", file=sys.stderr)

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _ProgressBars:
    """Two tqdm bars fed by execution events: the whole workflow (WorkflowProgress.fraction) and
    the current node's own steps."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        # Redrawn bars are noise in a log file: without a terminal, print one line per node.
        self.plain = enabled and not sys.stderr.isatty()
        self.workflow: Any = None
        self.node: Any = None

    def __enter__(self) -> _ProgressBars:
        if self.enabled and not self.plain:
            from tqdm import tqdm

            self._tqdm = tqdm
            self.workflow = tqdm(total=100, desc="workflow", unit="%", position=0, leave=True,
                                 bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for bar in (self.node, self.workflow):
            if bar is not None:
                bar.close()
        self.node = self.workflow = None

    def __call__(self, event: Event) -> None:
        if self.plain and isinstance(event, Executing):
            print(f"[{event.workflow.fraction * 100:3.0f}%] node {event.node_id} {event.class_type}",
                  file=sys.stderr, flush=True)
        elif self.plain and isinstance(event, ExecutionSuccess):
            print("[100%] workflow finished", file=sys.stderr, flush=True)
        if self.workflow is None:
            return
        if isinstance(event, Executing):
            self._set_workflow(event.workflow.fraction)
            self.workflow.set_postfix_str(f"node {event.node_id} {event.class_type}", refresh=True)
            if self.node is not None:
                self.node.close()
                self.node = None
        elif isinstance(event, Progress):
            self._set_workflow(event.workflow.fraction)
            if self.node is None:
                self.node = self._tqdm(total=event.max, desc=f"node {event.node_id}", position=1, leave=False)
            self.node.total = event.max
            self.node.n = event.value
            self.node.refresh()
        elif isinstance(event, ExecutionSuccess):
            self._set_workflow(1.0)

    def _set_workflow(self, fraction: float) -> None:
        self.workflow.n = round(fraction * 100, 1)
        self.workflow.refresh()


# -- batch -----------------------------------------------------------------------------------


@dataclass
class _Item:
    name: str
    path: Path
    overrides: list[str]


def _cmd_batch(args: argparse.Namespace) -> int:
    env = _environment(args)
    try:
        items = _batch_items(args)
    except (WorkflowFormatError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    manifest = args.manifest or (env.folders.output_dir or Path("output")) / "manifest.jsonl"
    done = _done_items(manifest)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    failures = 0
    interrupt = InterruptFlag()
    with manifest.open("a", encoding="utf-8") as log, _sigint_sets(interrupt):
        for number, item in enumerate(items, 1):
            if item.name in done:
                print(f"[{number}/{len(items)}] {item.name}: already done, skipped")
                continue
            record = _run_item(env, item, args, interrupt)
            if record["status"] == "interrupted":
                print(f"[{number}/{len(items)}] {item.name}: interrupted", file=sys.stderr)
                return EXIT_INTERRUPTED
            log.write(json.dumps(record) + "\n")
            log.flush()
            failures += record["status"] != "success"
            detail = record["error"] if record["error"] else f"{len(record['outputs'])} output file(s)"
            print(f"[{number}/{len(items)}] {item.name}: {record['status']} "
                  f"({record['seconds']:.2f} s) {detail}")
    print(f"batch: {len(items) - failures} of {len(items)} item(s) done; manifest {manifest}")
    return EXIT_FAILED if failures else EXIT_OK


def _batch_items(args: argparse.Namespace) -> list[_Item]:
    if args.params is not None:
        path = Path(args.source)
        items = []
        for number, line in enumerate(args.params.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                params = json.loads(line)
            except json.JSONDecodeError as exc:
                raise WorkflowFormatError(f"{args.params}:{number}: not JSON ({exc})") from exc
            if not isinstance(params, dict):
                raise WorkflowFormatError(f"{args.params}:{number}: expected an object of overrides")
            name = str(params.pop("_id", f"line {number}"))
            overrides = args.overrides + [f"{key}={json.dumps(value)}" for key, value in params.items()]
            items.append(_Item(name, path, overrides))
        return items
    source = Path(args.source)
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in (".json", ".png"))
    else:
        paths = sorted(Path(p) for p in glob.glob(args.source))
    if not paths:
        raise WorkflowFormatError(f"no workflow files match {args.source!r}")
    return [_Item(str(path), path, list(args.overrides)) for path in paths]


def _done_items(manifest: Path) -> set[str]:
    if not manifest.exists():
        return set()
    done = set()
    for line in manifest.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash; that item simply runs again
        if isinstance(record, dict) and record.get("status") == "success":
            done.add(str(record.get("item")))
    return done


def _run_item(env: _Env, item: _Item, args: argparse.Namespace, interrupt: InterruptFlag) -> dict[str, Any]:
    started = time.perf_counter()
    record: dict[str, Any] = {"item": item.name, "status": "success", "outputs": [], "error": None}
    try:
        workflow = _load(item.path, env.registry, item.overrides)
        result = env.runtime.execute(workflow.prompt, extra_data=workflow.extra_data, interrupt=interrupt)
    except WorkflowFormatError as exc:
        record.update(status="invalid", error=str(exc))
    except WorkflowInvalid as exc:
        record.update(status="invalid", error=exc.result.format())
    else:
        record["outputs"] = output_files(result, env.folders)
        if result.status == "error" and result.error is not None:
            record.update(status="error", error=describe_failure(result.error))
        elif result.status == "interrupted":
            record["status"] = "interrupted"
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


# -- validate / convert / nodes / plugins -----------------------------------------------------


def _cmd_validate(args: argparse.Namespace) -> int:
    env = _environment(args)
    try:
        workflow = _load(args.workflow, env.registry, args.overrides)
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
    env = _environment(args)
    try:
        workflow = _load(args.workflow, env.registry, [])
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
    env = _environment(args)
    registry = env.registry
    if args.json:
        from graph_runtime.schema import object_info

        info = object_info(registry)
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
    env = _environment(args)
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
