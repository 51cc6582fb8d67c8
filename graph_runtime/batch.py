"""``nodeloom batch``: many runs in one process (the cache and loaded models are reused across
items), past failed items, with a JSONL manifest that makes a re-run skip what is done."""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graph_runtime.context import InterruptFlag
from graph_runtime.formats import WorkflowFormatError
from graph_runtime.headless import (
    EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, Env, describe_failure, environment,
    load_workflow, output_files, sigint_sets,
)
from graph_runtime.validation import WorkflowInvalid


@dataclass
class _Item:
    name: str
    path: Path
    overrides: list[str]


def cmd_batch(args: argparse.Namespace) -> int:
    env = environment(args)
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
