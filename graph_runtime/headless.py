"""What the headless commands share: the environment a command runs in (folders, plugins, runtime,
model options), workflow loading with overrides, Ctrl-C as interrupt, and result reporting."""

from __future__ import annotations

import argparse
import contextlib
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
from graph_runtime.folders import FolderPaths, configure
from graph_runtime.formats import Workflow, WorkflowFormatError, apply_overrides, load_workflow_file
from graph_runtime.registry import NodeRegistry, load_registry

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass
class Env:
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


def environment(args: argparse.Namespace) -> Env:
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
    return Env(registry, Runtime(registry, cache=cache, folders=folders, services=services), folders)


def load_workflow(path: Path, registry: NodeRegistry, overrides: list[str]) -> Workflow:
    """Read and override a workflow; raises WorkflowFormatError for anything unreadable."""
    if not path.exists():
        raise WorkflowFormatError(f"{path}: no such file")
    workflow = load_workflow_file(path, registry)
    if overrides:
        workflow.prompt = apply_overrides(workflow.prompt, overrides)
    return workflow



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
