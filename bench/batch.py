"""A batch of tiny txt2img workflows through one local worker process vs Ray actors.

    python bench/batch.py                  # tiny zoo in a temp dir, N=20, 4 steps, CPU ok
    python bench/batch.py --n 100 --steps 8 --root models --trivial-n 200

Each pool runs the same worker code (server.execution.worker): ``LocalWorkerPool`` with one
process, then ``RayWorkerPool`` with 1 and with 2 actors on a local Ray (every worker with one
torch thread, so that 1 worker vs 1 actor differ only by the way jobs reach them). Every worker is
started and warmed with one item (models loaded) before the clock starts. Prints start-up seconds,
items/s for each, the speed-up of 2 actors over the local worker, and the per-item Ray overhead
(1 actor vs 1 local worker, in ms). On two cores expect little gain from the second actor; the
point is the overhead figure.

The txt2img items take tens of ms of torch each, so on a busy machine their noise can exceed the
overhead (even make it negative). Each pool therefore also runs ``--trivial-n`` model-free items
(a small EmptyImage saved as PNG, a colour per item so none is cached): their per-item difference
is Ray's own cost (the job and its events crossing to the actor and back).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class _Runner:
    """Submits jobs to a pool as the batch driver does and waits for all of them."""

    def __init__(self, pool: Any) -> None:
        self.pool, self.waiting, self.running = pool, [], set()
        self.ready: set[int] = set()
        self.event = asyncio.Event()

    def on_ready(self, worker: Any, schemas: Any) -> None:
        self.ready.add(worker.index)
        self.event.set()
        self.dispatch()

    def on_event(self, worker: Any, event: Any) -> None:
        pass

    def on_finished(self, worker: Any, prompt_id: str, result: Any) -> None:
        assert result.status == "success", result
        self.running.discard(prompt_id)
        self.event.set()
        self.dispatch()

    def on_dropped(self, prompt_id: str) -> None:
        raise AssertionError("nothing is cancelled here")

    def on_returned(self, prompt_ids: list[str]) -> None:
        raise AssertionError("no worker dies here")

    def dispatch(self) -> None:
        from server.execution.messages import Job

        while self.waiting and self.pool.has_capacity():
            prompt_id = uuid.uuid4().hex
            if not self.pool.submit(Job(prompt_id, self.waiting[0], {})):
                break
            self.waiting.pop(0)
            self.running.add(prompt_id)

    async def until(self, done: Any) -> None:
        while not done():
            self.event.clear()
            await self.event.wait()

    async def run(self, prompts: list[dict[str, Any]]) -> float:
        began = time.perf_counter()
        self.waiting = list(prompts)
        self.dispatch()
        await self.until(lambda: not self.waiting and not self.running)
        return time.perf_counter() - began


async def measure(pool: Any, workers: int, prompts: list[dict[str, Any]], warm: dict[str, Any],
                  trivial: list[dict[str, Any]]) -> tuple[float, float, float]:
    """(start-up seconds, seconds for ``prompts``, seconds for the ``trivial`` ones) on ``pool``."""
    runner = _Runner(pool)
    began = time.perf_counter()
    await pool.start(runner)
    await runner.until(lambda: len(runner.ready) >= workers)
    startup = time.perf_counter() - began
    for _ in range(workers):  # one warm-up item per worker: placement gives each idle worker one
        runner.waiting.append(warm)
    runner.dispatch()
    await runner.until(lambda: not runner.waiting and not runner.running)
    try:
        seconds = await runner.run(prompts)
        return startup, seconds, await runner.run(trivial)
    finally:
        await pool.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--root", type=Path, default=None, help="models root holding the tiny zoo")
    parser.add_argument("--trivial-n", type=int, default=100, help="model-free items that isolate Ray's own cost")
    args = parser.parse_args(argv)

    import ray

    from graph_runtime.folders import FolderPaths
    from nodes.diffusion.zoo import tiny_zoo_at
    from server.execution.local import LocalWorkerPool
    from server.execution.messages import WorkerConfig
    from server.execution.ray_pool import ActorShape, RayWorkerPool

    root = tiny_zoo_at(args.root)
    base = Path(tempfile.mkdtemp())
    config = WorkerConfig(device="cpu", folders=FolderPaths(base=base, models_roots=[root]),
                          builtin_plugins=("nodes.core", "nodes.diffusion"), threads=1)
    workflow = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    workflow["3"]["inputs"]["steps"] = args.steps

    def prompt(seed: int) -> dict[str, Any]:
        copy = json.loads(json.dumps(workflow))
        copy["3"]["inputs"]["seed"] = seed
        return copy

    prompts, warm = [prompt(seed) for seed in range(args.n)], prompt(10_000)
    trivial = [trivial_prompt(number) for number in range(args.trivial_n)]
    make = lambda device: replace(config, device=device)  # noqa: E731
    local = asyncio.run(measure(LocalWorkerPool(["cpu"], make), 1, prompts, warm, trivial))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        one = asyncio.run(measure(RayWorkerPool(make, shape=ActorShape(workers=1)), 1, prompts, warm, trivial))
        two = asyncio.run(measure(RayWorkerPool(make, shape=ActorShape(workers=2)), 2, prompts, warm, trivial))
    finally:
        ray.shutdown()
    print(f"{args.n} txt2img items, {args.steps} steps, tiny zoo; {args.trivial_n} model-free items; "
          f"{os.cpu_count()} cores")
    for name, (startup, seconds, plain) in (("local worker process", local), ("ray, 1 actor", one),
                                            ("ray, 2 actors", two)):
        print(f"  {name:<22} start-up {startup:6.1f} s   txt2img {args.n / seconds:6.2f} items/s ({seconds:.2f} s)"
              f"   model-free {args.trivial_n / plain:7.1f} items/s ({plain:.2f} s)")
    print(f"ray 2 actors / local worker: {local[1] / two[1]:.2f}x txt2img items/s")
    print(f"ray overhead per item (1 actor vs 1 local worker): txt2img {(one[1] - local[1]) / args.n * 1000:+.1f} ms, "
          f"model-free {(one[2] - local[2]) / args.trivial_n * 1000:+.1f} ms (Ray's own cost)")
    return 0


def trivial_prompt(number: int) -> dict[str, Any]:
    """A model-free item: a small image of its own colour (so no item is cached), saved as PNG."""
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                         "color": number * 9973 % 0xFFFFFF}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bench/trivial"}}}


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
