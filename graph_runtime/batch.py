"""``nodeloom batch``: many runs in one process (the cache and loaded models are reused across
items), past failed items, with a JSONL manifest that makes a re-run skip what is done.

``--executor NAME`` hands the items to an executor a plugin registers
(``nodeloom_batch_executors``; the server plugin's ``ray`` runs them on Ray actors): this process
reads the workflows and writes the manifest, the executor runs them and reports one record each.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from graph_runtime.context import InterruptFlag
from graph_runtime.formats import WorkflowFormatError
from graph_runtime.headless import (
    EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, Env, describe_failure, environment,
    load_workflow, output_files, sigint_sets,
)
from graph_runtime.schema import model_inputs
from graph_runtime.validation import WorkflowInvalid

LOCAL = "local"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass
class _Item:
    name: str
    path: Path
    overrides: list[str]


@dataclass(frozen=True)
class BatchJob:
    """One item read and ready to run: its manifest name, API prompt and extra data, and the
    ``folder/name`` of the model files it picks (items sharing them are run side by side)."""

    name: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    models: frozenset[str] = frozenset()


class BatchExecutor(Protocol):
    """Runs a batch's jobs somewhere other than this process."""

    def run(self, jobs: list[BatchJob], interrupt: InterruptFlag, report: Callable[[dict[str, Any]], None]) -> None:
        """Run every job, calling ``report`` (on this thread) with one manifest record
        ``{item, status, outputs, error, seconds}`` per job as it ends; status is success, error,
        invalid or interrupted. Returns when every job is reported, or once ``interrupt`` is set
        and the running ones have stopped. Raises ``ValueError`` when it cannot run at all."""


def output_location(text: str) -> Path | str:
    """``--out``: a folder, or an fsspec URL (``s3://bucket/renders``) kept as text."""
    return text if _URL.match(text) else Path(text)


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", default=LOCAL, metavar="NAME",
                        help="where items run: local (this process, default) or an executor a plugin "
                             "adds: ray (Ray actors; pip install 'nodeloom[ray]', see docs/ray.md)")
    parser.add_argument("--address", help="with --executor ray: the cluster (auto, HOST:PORT or ray://HOST:PORT); "
                                          "default: start a local Ray")
    parser.add_argument("--workers", type=int, help="with --executor ray: number of actors "
                                                    "(default: one per GPU of the cluster, or per CPU)")
    parser.add_argument("--retries", type=int, default=2,
                        help="with --executor ray: times an item whose worker died is run again (default 2)")


def cmd_batch(args: argparse.Namespace) -> int:
    if getattr(args, "executor", LOCAL) != LOCAL:
        return _cmd_batch_elsewhere(args)
    if isinstance(args.out, str):
        print(f"error: --out {args.out}: a URL needs an executor that runs elsewhere (--executor ray); "
              "the local executor writes to a folder", file=sys.stderr)
        return EXIT_INVALID
    env = environment(args)
    try:
        items = _batch_items(args)
    except (WorkflowFormatError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    manifest = _manifest_path(args, env)
    done = _done_items(manifest)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    failures = 0
    interrupt = InterruptFlag()
    with manifest.open("a", encoding="utf-8") as log, sigint_sets(interrupt):
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


def _manifest_path(args: argparse.Namespace, env: Env) -> Path:
    return args.manifest or (env.folders.output_dir or Path("output")) / "manifest.jsonl"


def _cmd_batch_elsewhere(args: argparse.Namespace) -> int:
    """The batch on a plugin's executor: workflows are read here, run there."""
    env = environment(args)
    executors = env.registry.batch_executors()
    factory = executors.get(args.executor)
    if factory is None:
        known = ", ".join(sorted({LOCAL, *executors}))
        hint = " (pip install 'nodeloom[ray]' and the server plugin)" if args.executor == "ray" else ""
        print(f"error: unknown executor {args.executor!r}{hint}; available: {known}", file=sys.stderr)
        return EXIT_INVALID
    try:
        items = _batch_items(args)
        executor = factory(args, env)
    except (WorkflowFormatError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    manifest = _manifest_path(args, env)
    # Only this batch's items: a manifest shared by several batches holds others, which would
    # count as done here (and skew the summary and the exit code).
    done = _done_items(manifest) & {item.name for item in items}
    manifest.parent.mkdir(parents=True, exist_ok=True)
    folders_of = model_inputs(env.registry)
    jobs: list[BatchJob] = []
    unreadable: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    for item in items:
        if item.name in done:
            continue
        started = time.perf_counter()
        try:
            workflow = load_workflow(item.path, env, item.overrides)
        except WorkflowFormatError as exc:
            unreadable.append({"item": item.name, "status": "invalid", "outputs": [], "error": str(exc),
                            "seconds": round(time.perf_counter() - started, 3)})
            continue
        jobs.append(BatchJob(item.name, workflow.prompt, workflow.extra_data, _models(workflow.prompt, folders_of)))
    # Items that share model files next to each other: a worker that holds them gets them in a row.
    jobs.sort(key=lambda job: sorted(job.models))
    interrupt = InterruptFlag()
    with manifest.open("a", encoding="utf-8") as log, sigint_sets(interrupt), \
            BatchProgress(len(items), len(done), enabled=not args.no_progress) as progress:
        for name in (item.name for item in items if item.name in done):
            progress.line(f"{name}: already done, skipped")

        def report(record: dict[str, Any]) -> None:
            if record["status"] == "interrupted":
                progress.line(f"{record['item']}: interrupted", error=True)
                return
            log.write(json.dumps(record) + "\n")
            log.flush()
            records.append(record)
            progress.record(record)

        for record in unreadable:
            report(record)
        try:
            executor.run(jobs, interrupt, report)
        except ValueError as exc:  # it cannot run at all (a cluster out of reach, workers that cannot start)
            print(f"error: {exc}", file=sys.stderr)
    failures = sum(r["status"] != "success" for r in records)
    finished = len(records) + len(done)
    print(f"batch: {finished - failures} of {len(items)} item(s) done; {failures} failed; "
          f"{len(items) - finished} not run; manifest {manifest}")
    if interrupt.is_set() and finished < len(items):
        return EXIT_INTERRUPTED
    return EXIT_FAILED if failures or finished < len(items) else EXIT_OK


def _models(prompt: dict[str, Any], folders_of: dict[str, dict[str, str]]) -> frozenset[str]:
    used = set()
    for node in prompt.values():
        inputs = node.get("inputs", {}) if isinstance(node, dict) else {}
        for name, folder in folders_of.get(node.get("class_type", "") if isinstance(node, dict) else "", {}).items():
            if isinstance(inputs.get(name), str):
                used.add(f"{folder}/{inputs[name]}")
    return frozenset(used)


class BatchProgress:
    """A bar over the whole batch (items finished of all, skipped ones counted as done) with one
    line per item above it; plain lines when not on a terminal or with ``enabled`` False."""

    def __init__(self, total: int, done: int, *, enabled: bool) -> None:
        self.total, self.count = total, done
        self.bar: Any = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc="batch", unit="item")

    def __enter__(self) -> BatchProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()

    def line(self, text: str, *, error: bool = False) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr if error else sys.stdout)
        else:
            print(text, file=sys.stderr if error else sys.stdout, flush=True)

    def record(self, record: dict[str, Any]) -> None:
        self.count += 1
        detail = record["error"] if record["error"] else f"{len(record['outputs'])} output file(s)"
        self.line(f"[{self.count}/{self.total}] {record['item']}: {record['status']} ({record['seconds']:.2f} s) {detail}")
        if self.bar is not None:
            self.bar.update(1)


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
    # Bytes that are not UTF-8 (a line torn by a crash, a stray binary write) spoil their line only.
    for line in manifest.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash; that item simply runs again
        if isinstance(record, dict) and record.get("status") == "success":
            done.add(str(record.get("item")))
    return done


def _run_item(env: Env, item: _Item, args: argparse.Namespace, interrupt: InterruptFlag) -> dict[str, Any]:
    started = time.perf_counter()
    record: dict[str, Any] = {"item": item.name, "status": "success", "outputs": [], "error": None}
    try:
        workflow = load_workflow(item.path, env, item.overrides)
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
