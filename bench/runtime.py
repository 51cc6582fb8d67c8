"""Runtime overhead: a 1,000-node graph of trivial nodes run through the runtime versus the same
functions called directly in a loop, plus the cost of a fully cached re-run.

    python bench/runtime.py [--nodes 1000] [--work-ms 0 1] [--repeat 3]

Each node busy-waits ``work`` milliseconds, then adds its two inputs (node i reads nodes i-1 and
i//2, so the graph has fan-in and fan-out). Target: ratio <= 1.3 for nodes doing 1 ms of work.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from graph_runtime import (
    Context, Float, FolderPaths, Int, Link, Node, NodeRegistry, Output, OutputCache, Result, Runtime,
)


def work(a: int, b: int, ms: float) -> int:
    end = time.perf_counter() + ms / 1000.0
    while time.perf_counter() < end:
        pass
    return a + b


class Seed(Node):
    inputs = [Int("value", 1)]
    outputs = [Output("INT")]

    def run(self, ctx: Context, *, value: int) -> tuple[int]:
        return (value,)


class Work(Node):
    inputs = [Link("a", "INT"), Link("b", "INT"), Float("ms", 0.0, min=0.0)]
    outputs = [Output("INT")]

    def run(self, ctx: Context, *, a: int, b: int, ms: float) -> tuple[int]:
        return (work(a, b, ms) % 1_000_003,)


class Sink(Node):
    output_node = True
    inputs = [Link("value", "INT")]
    outputs = []

    def run(self, ctx: Context, *, value: int) -> Result:
        return Result(ui={"value": [value]})


def build(nodes: int, ms: float) -> dict[str, Any]:
    prompt: dict[str, Any] = {"0": {"class_type": "Seed", "inputs": {"value": 1}}}
    for i in range(1, nodes - 1):
        prompt[str(i)] = {"class_type": "Work",
                          "inputs": {"a": [str(i - 1), 0], "b": [str(i // 2), 0], "ms": ms}}
    prompt[str(nodes - 1)] = {"class_type": "Sink", "inputs": {"value": [str(nodes - 2), 0]}}
    return prompt


def direct(nodes: int, ms: float) -> int:
    values = [1]
    for i in range(1, nodes - 1):
        values.append(work(values[i - 1], values[i // 2], ms) % 1_000_003)
    return values[-1]


def best(repeat: int, fn: Any) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def measure(nodes: int, ms: float, repeat: int, folders: FolderPaths) -> dict[str, float]:
    registry = NodeRegistry()
    for cls in (Seed, Work, Sink):
        registry.add_node(cls, plugin="bench")
    prompt = build(nodes, ms)
    direct_s, expected = best(repeat, lambda: direct(nodes, ms))

    def fresh_run() -> Any:
        runtime = Runtime(registry, cache=OutputCache(), folders=folders)
        return runtime.execute(prompt)

    runtime_s, result = best(repeat, fresh_run)
    assert result.status == "success" and result.outputs[str(nodes - 1)] == {"value": [expected]}
    warm = Runtime(registry, cache=OutputCache(), folders=folders)
    warm.execute(prompt)
    cached_s, again = best(repeat, lambda: warm.execute(prompt))
    assert again.executed == []
    return {"direct": direct_s, "runtime": runtime_s, "cached": cached_s,
            "ratio": runtime_s / direct_s if direct_s else float("inf"),
            "overhead_us": (runtime_s - direct_s) / nodes * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--work-ms", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folders = FolderPaths(base=Path(tmp))
        print(f"{args.nodes} nodes, best of {args.repeat}")
        print(f"{'work/node':>10} {'direct s':>9} {'runtime s':>10} {'ratio':>7} "
              f"{'overhead µs/node':>17} {'cached re-run s':>16} {'cached µs/node':>15}")
        for ms in args.work_ms:
            r = measure(args.nodes, ms, args.repeat, folders)
            target = "  (target <= 1.3)" if ms >= 1.0 else ""
            print(f"{ms:>8.2f}ms {r['direct']:>9.4f} {r['runtime']:>10.4f} {r['ratio']:>7.3f} "
                  f"{r['overhead_us']:>17.1f} {r['cached']:>16.4f} {r['cached'] / args.nodes * 1e6:>15.1f}{target}")


if __name__ == "__main__":
    main()
