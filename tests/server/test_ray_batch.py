"""Batches on Ray actors: every item once in the manifest, outputs where the local executor puts
them and equal to its outputs, an actor killed mid-batch costing nothing but a retry."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from graph_runtime.batch import BatchJob
from graph_runtime.context import InterruptFlag
from graph_runtime.folders import FolderPaths
from server.execution.messages import WorkerConfig
from server.execution.pool_batch import PoolBatch
from server.execution.publish import join
from tests.server.conftest import PLUGINS, REPO, color_prompt

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def actor_batch(base: Path, *, retries: int = 2) -> tuple[PoolBatch, Any]:
    """Two actors with the torch-free test nodes, publishing into ``base/shared``."""
    from server.execution.ray_pool import ActorShape, RayWorkerPool

    config = WorkerConfig(device="cpu", folders=FolderPaths(base=base), plugin_dirs=(PLUGINS,), builtin_plugins=(),
                          threads=1)
    target = str(base / "shared")
    pool = RayWorkerPool(lambda device: replace(config, device=device), shape=ActorShape(workers=2),
                         publish_to=target)
    locate = lambda item: join(target, item["subfolder"], item["filename"])  # noqa: E731
    return PoolBatch(pool, retries=retries, locate=locate, start_failure=lambda: pool.start_failure), pool


def colour_job(number: int, slow: bool = False) -> BatchJob:
    prompt = color_prompt(red=number * 10, green=3, blue=200, size=4)
    if slow:
        prompt["3"] = {"class_type": "TestSlow", "inputs": {"steps": 4, "delay": 0.1, "previews": False}}
    return BatchJob(f"item {number}", prompt, {})


def run_batch(batch: PoolBatch, jobs: list[BatchJob], on_record: Any = None) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []

    def report(record: dict[str, Any]) -> None:
        records.append(record)
        if on_record is not None:
            on_record(records)

    batch.run(jobs, InterruptFlag(), report)
    return records


def test_twenty_items_on_two_actors_each_recorded_once_with_its_pixels(ray_cluster: None, tmp_path: Path) -> None:
    batch, pool = actor_batch(tmp_path)
    records = run_batch(batch, [colour_job(n) for n in range(20)])
    assert sorted(r["item"] for r in records) == sorted(f"item {n}" for n in range(20))
    assert all(r["status"] == "success" and r["error"] is None for r in records)
    assert all(set(r) == {"item", "status", "outputs", "error", "seconds"} for r in records)
    for record in records:
        (path,) = record["outputs"]
        assert Path(path).parent == tmp_path / "shared"
        assert Image.open(path).getpixel((0, 0)) == (int(record["item"].split()[1]) * 10, 3, 200)
    assert not list((tmp_path / "output").glob("*.png")), "actors stage outside the driver's output folder"
    assert len({w["pid"] for w in pool.stats()}) == 2


def test_an_actor_killed_mid_batch_still_completes_every_item_once(ray_cluster: None, tmp_path: Path) -> None:
    batch, pool = actor_batch(tmp_path)
    killed: list[int] = []

    def kill_a_busy_actor(records: list[dict[str, Any]]) -> None:
        if len(records) == 3 and not killed:
            busy = next(w for w in pool.workers if w.running is not None)
            killed.append(busy.pid)
            ray.kill(busy.conn.actor)

    records = run_batch(batch, [colour_job(n, slow=True) for n in range(20)], kill_a_busy_actor)
    assert killed
    assert Counter(r["item"] for r in records) == Counter(f"item {n}" for n in range(20))
    assert [r for r in records if r["status"] != "success"] == []
    assert batch.retried >= 1
    assert sum(w.restarts for w in pool.workers) == 1


def test_with_retries_spent_the_item_is_an_error_naming_the_dead_actor(ray_cluster: None, tmp_path: Path) -> None:
    batch, pool = actor_batch(tmp_path, retries=0)
    killed: list[str] = []

    def kill_a_busy_actor(records: list[dict[str, Any]]) -> None:
        if not killed:
            busy = next(w for w in pool.workers if w.running is not None)
            killed.append(busy.running)
            ray.kill(busy.conn.actor)

    records = run_batch(batch, [colour_job(n, slow=True) for n in range(4)], kill_a_busy_actor)
    assert sorted(r["item"] for r in records) == [f"item {n}" for n in range(4)]
    (failed,) = [r for r in records if r["status"] != "success"]
    assert failed["status"] == "error" and failed["outputs"] == []
    assert "Ray actor nodeloom-worker-" in failed["error"] and "died" in failed["error"]
    assert failed["error"].endswith("(after 1 attempt(s))")


def test_actors_that_cannot_start_end_the_batch_naming_why(ray_cluster: None, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from graph_runtime.cli import main

    (tmp_path / "wf.json").write_text(json.dumps(color_prompt(red=1, green=2, blue=3, size=4)))
    (tmp_path / "taken").write_text("a file where the output folder should be")
    code = main(["batch", str(tmp_path / "wf.json"), "--base", str(tmp_path), "--plugins-dir", str(PLUGINS),
                 "--executor", "ray", "--workers", "1", "--out", str(tmp_path / "taken"), "--no-progress",
                 "--manifest", str(tmp_path / "m.jsonl")])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: no Ray actor could start (3 attempts): " in err
    assert "could not start: FileExistsError" in err and str(tmp_path / "taken") in err
    assert "Traceback" not in err


def test_an_address_nothing_answers_at_fails_at_once_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import socket
    import time

    from graph_runtime.cli import main

    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as a fresh driver, whatever ran before
    (tmp_path / "wf.json").write_text(json.dumps(color_prompt(red=1, green=2, blue=3, size=4)))
    began = time.monotonic()
    code = main(["batch", str(tmp_path / "wf.json"), "--base", str(tmp_path), "--plugins-dir", str(PLUGINS),
                 "--executor", "ray", "--address", f"127.0.0.1:{port}", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 1 and time.monotonic() - began < 30, "ray.init alone would retry for minutes"
    assert f"error: cannot reach the Ray cluster at '127.0.0.1:{port}': " in err and "Traceback" not in err
    assert "0 of 1 item(s) done; 0 failed; 1 not run" in out


def test_a_shared_manifest_skips_only_this_batchs_items(ray_cluster: None, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from graph_runtime.cli import main

    (tmp_path / "wf.json").write_text(json.dumps(color_prompt(red=1, green=2, blue=3, size=4)))
    (tmp_path / "p.jsonl").write_text('{"1.red": 10, "_id": "ten"}\n{"1.red": 11, "_id": "eleven"}\n')
    manifest = tmp_path / "runs.jsonl"
    manifest.write_bytes(b'{"item": "ten", "status": "success", "outputs": [], "error": null, "seconds": 1}\n'
                         b'{"item": "of another batch", "status": "success", "outputs": [], "error": null}\n'
                         b'\xff\xfe{"item": "torn", "sta\n')
    code = main(["batch", str(tmp_path / "wf.json"), "--params", str(tmp_path / "p.jsonl"), "--base", str(tmp_path),
                 "--plugins-dir", str(PLUGINS), "--executor", "ray", "--workers", "1", "--no-progress",
                 "--manifest", str(manifest)])
    out = capsys.readouterr().out
    assert "ten: already done, skipped" in out and "[2/2] eleven: success" in out
    assert "batch: 2 of 2 item(s) done; 0 failed; 0 not run" in out and code == 0
    assert [json.loads(line)["item"] for line in manifest.read_bytes().splitlines()[3:]] == ["eleven"]


def test_an_out_url_no_other_process_can_read_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from graph_runtime.cli import main

    (tmp_path / "wf.json").write_text(json.dumps(color_prompt(red=1, green=2, blue=3, size=4)))
    code = main(["batch", str(tmp_path / "wf.json"), "--base", str(tmp_path), "--plugins-dir", str(PLUGINS),
                 "--executor", "ray", "--out", "memory://renders", "--no-progress"])
    assert code == 2
    assert "error: --out memory://renders: memory:// lives inside one process" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_model_batch_through_the_cli_equals_the_local_executor(ray_cluster: None, zoo_root: Path,
                                                                     tmp_path: Path) -> None:
    import torch

    from graph_runtime.cli import main

    params = tmp_path / "seeds.jsonl"
    params.write_text("".join(json.dumps({"3.seed": seed, "3.steps": 2, "_id": f"seed {seed}"}) + "\n"
                              for seed in range(20)))
    common = ["batch", str(REPO / "workflows" / "txt2img.json"), "--params", str(params), "--base", str(zoo_root.parent),
              "--models", str(zoo_root), "--no-progress"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each actor: float sums then add up in the same order
    try:
        assert main([*common, "--out", str(tmp_path / "local"), "--manifest", str(tmp_path / "local.jsonl")]) == 0
    finally:
        torch.set_num_threads(threads)
    ray_args = [*common, "--out", str(tmp_path / "ray"), "--manifest", str(tmp_path / "ray.jsonl"), "--executor", "ray",
                "--workers", "2"]
    assert main(ray_args) == 0
    local = {r["item"]: r for r in map(json.loads, (tmp_path / "local.jsonl").read_text().splitlines())}
    on_ray = {r["item"]: r for r in map(json.loads, (tmp_path / "ray.jsonl").read_text().splitlines())}
    assert sorted(on_ray) == sorted(local) and len(on_ray) == 20
    for item, record in local.items():
        assert on_ray[item]["status"] == "success" and set(on_ray[item]) == set(record)
        (mine,), (theirs,) = on_ray[item]["outputs"], record["outputs"]
        assert np.array_equal(np.asarray(Image.open(mine)), np.asarray(Image.open(theirs))), item
    assert main(ray_args) == 0  # resumed: everything is done already
    assert len((tmp_path / "ray.jsonl").read_text().splitlines()) == 20


def test_without_ray_the_flag_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from server.execution.ray_pool import RayUnavailable, import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # importing it raises ModuleNotFoundError
    with pytest.raises(RayUnavailable, match=r"pip install 'nodeloom\[ray\]'"):
        import_ray()


class _ClusterView:
    """Ray as the pool sees it, with the cluster's resources set by the test (nodes joining and
    leaving without starting any)."""

    def __init__(self, real: Any, resources: dict[str, float]) -> None:
        self.real, self.resources = real, resources

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def cluster_resources(self) -> dict[str, float]:
        return dict(self.resources)


def test_the_pool_follows_nodes_joining_and_leaving(ray_cluster: None, tmp_path: Path) -> None:
    import asyncio

    from server.execution.ray_pool import ActorShape, RayWorkerPool

    config = WorkerConfig(device="cpu", folders=FolderPaths(base=tmp_path), plugin_dirs=(PLUGINS,),
                          builtin_plugins=(), threads=1)
    pool = RayWorkerPool(lambda device: replace(config, device=device), shape=ActorShape(cpus=1),
                         follow_seconds=0.1)
    ready: list[int] = []

    class Listener:
        def on_ready(self, worker: Any, schemas: Any) -> None:
            ready.append(worker.index)

        def __getattr__(self, name: str) -> Any:
            return lambda *args: None

    async def until(predicate: Any) -> None:
        for _ in range(600):
            if predicate():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"pool never got there: {pool.stats()}")

    def states() -> list[str]:
        return [w.state for w in pool.workers]

    async def scenario() -> None:
        await pool.start(Listener())
        try:
            await until(lambda: sorted(ready) == [0, 1])  # one actor per CPU of the 2-CPU cluster
            first = [w.pid for w in pool.workers]
            view = _ClusterView(pool._ray, {"CPU": 3.0})
            pool._ray = view
            await until(lambda: states() == ["ready", "ready", "starting"])  # a node joined
            view.resources = {"CPU": 2.0}
            await until(lambda: states() == ["ready", "ready", "retired"])  # it left before its actor ran
            assert [w["index"] for w in pool.stats()] == [0, 1] and [w.pid for w in pool.workers[:2]] == first
            view.resources = {"CPU": 3.0}
            await until(lambda: states() == ["ready", "ready", "starting"])  # back: the retired slot is reused
            assert len(pool.workers) == 3 and pool.workers[2].generation == 2
            view.resources = {"CPU": 1.0}
            await until(lambda: states() == ["ready", "ready", "retired"])
            ray.kill(pool.workers[1].conn.actor)  # an actor of the node that left dies: not replaced
            await until(lambda: states() == ["ready", "retired", "retired"])
            await asyncio.sleep(0.5)
            assert states() == ["ready", "retired", "retired"] and [w["index"] for w in pool.stats()] == [0]
        finally:
            await pool.stop()

    asyncio.run(scenario())


def test_actor_count_follows_gpus_then_cpus_at_most_one_actor_per_cpu() -> None:
    from server.execution.ray_pool import ActorShape

    assert ActorShape().target({"CPU": 8.0, "GPU": 2.0}) == (2, True)
    assert ActorShape(cpus=2).target({"CPU": 8.0}) == (4, False)
    # A fractional request must not turn two CPUs into two hundred processes.
    assert ActorShape(cpus=0.01).target({"CPU": 2.0}) == (2, False)
    assert ActorShape(workers=3).target({"CPU": 2.0}) == (3, False)
    assert ActorShape().target({}) == (1, False)
