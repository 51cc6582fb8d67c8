"""What the headless commands share: the environment a command runs in (folders, plugins, runtime,
the plugins' settings), workflow loading with overrides, Ctrl-C as interrupt, and result reporting."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graph_runtime.cache import OutputCache
from graph_runtime.context import InterruptFlag, Services
from graph_runtime.events import ExecutionError
from graph_runtime.executor import RunResult, Runtime
from graph_runtime.folders import FolderPaths
from graph_runtime.formats import Workflow, WorkflowFormatError, apply_overrides, load_workflow_file
from graph_runtime.registry import NodeRegistry

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass
class Env:
    registry: NodeRegistry
    runtime: Runtime
    folders: FolderPaths


def plugin_dirs_of(given: list[Path] | None, base: Path) -> list[Path]:
    """The plugin folders of a command: those given with ``--plugins-dir``, else BASE/plugins if
    it exists (``--base`` defaults to the current folder)."""
    return list(given) if given else [p for p in [Path(base) / "plugins"] if p.is_dir()]


def environment(args: argparse.Namespace) -> Env:
    """Folders, nodes, cache and services for a command. ``args.registry`` holds the plugins the
    command line was built from; their nodes are collected here, their ``nodeloom_startup`` runs
    and their ``nodeloom_settings`` (from the parsed options) become ``ctx.services``' settings."""
    base = Path(args.base).resolve()
    out = getattr(args, "out", None)  # a URL (batch on workers that publish there) is not a folder here
    folders = FolderPaths(base=base, models_roots=[Path(args.models).resolve()] if args.models else [],
                          output_dir=out if isinstance(out, Path) else None)
    if args.extra_model_paths:
        folders.load_extra_model_paths(args.extra_model_paths)
    registry: NodeRegistry = args.registry
    registry.add_bundled_model_paths(folders)
    registry.load_nodes()
    registry.startup({"base": str(base), "models": [str(r) for r in folders.models_roots]})
    for record in registry.plugins:  # failed plugins were logged when they failed
        for node, reason in record.skipped.items():
            print(f"warning: plugin {record.name}: node {node} skipped: {reason}", file=sys.stderr)
    cache = OutputCache(policy=args.cache_policy, max_entries=args.cache_max_entries,
                        max_bytes=args.cache_max_bytes)
    services = Services(settings=registry.settings(vars(args)))
    return Env(registry, Runtime(registry, folders=folders, cache=cache, services=services), folders)


def load_workflow(path: Path, env: Env, overrides: list[str]) -> Workflow:
    """Read and override a workflow (a UI-format one converted with the env's nodes and folders);
    raises WorkflowFormatError for anything unreadable."""
    if not path.exists():
        raise WorkflowFormatError(f"{path}: no such file")
    workflow = load_workflow_file(path, env.registry, ctx=env.runtime.hook_context)
    if overrides:
        workflow.prompt = apply_overrides(workflow.prompt, overrides)
        check_override_inputs(workflow.prompt, overrides, env.registry)
    return workflow


def check_override_inputs(prompt: dict[str, Any], overrides: list[str], registry: NodeRegistry) -> None:
    """Refuse an override of an input its node does not declare: validation and the run ignore
    undeclared inputs (as ComfyUI does), so a typo such as ``6.sed=3`` would change nothing, unsaid.
    A node of an unknown class is left to validation, which names it."""
    for assignment in overrides:
        node_id, _, input_name = assignment.partition("=")[0].partition(".")
        cls = registry.get(str(prompt[node_id].get("class_type")))
        if cls is not None and cls.input_spec(input_name) is None:
            names = ", ".join(spec.name for spec in cls.inputs if not spec.hidden)
            raise WorkflowFormatError(f"override {assignment!r}: node {node_id} ({cls.__name__}) has no input "
                                      f"{input_name!r} (its inputs: {names})")


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


class _Plain(logging.Formatter):
    """``warning: message``; a record's traceback only when ``verbose``."""

    def __init__(self, *, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        if self.verbose and record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


@contextlib.contextmanager
def cli_logging(*, verbose: bool) -> Iterator[None]:
    """While a command runs, log records (a plugin skipped, a hook that failed) reach the
    terminal once, as ``warning: …`` lines; with ``verbose`` also the runtime's debug lines and
    tracebacks."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Plain(verbose=verbose))
    handler.setLevel(logging.DEBUG if verbose else logging.WARNING)
    root, runtime = logging.getLogger(), logging.getLogger("graph_runtime")
    previous = runtime.level
    root.addHandler(handler)
    if verbose:
        runtime.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        runtime.setLevel(previous)


@contextlib.contextmanager
def sigint_sets(flag: InterruptFlag) -> Iterator[None]:
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
