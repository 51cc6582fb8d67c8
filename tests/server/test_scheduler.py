"""The scheduler against a fake ExecutionPool: queue order, dispatch, pool reports, completion into
the store and the /jobs view, cancel, interrupt, and that no per-prompt state outlives a prompt."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from graph_runtime.events import ExecutionStart, ExecutionSuccess, Executing, WorkflowProgress
from graph_runtime.folders import FolderPaths
from server.execution.messages import Job, NodeSchemas
from server.execution.outcome import RunFailure, RunOutcome, RunResult
from server.execution.pool import ExecutionPool, PoolListener, WorkerRef
from server.http.routes_jobs import job_entry
from server.queue.scheduler import Scheduler, SubmissionError
from server.settings import ServerSettings

WORKER = WorkerRef(0, "cpu", 1234)
_OUT = {"output": [], "output_name": [], "output_is_list": [], "output_node": True}
SCHEMAS = NodeSchemas(
    object_info={
        "Color": {"input": {"required": {"red": ["INT", {"default": 0, "min": 0, "max": 255}]}}, **_OUT},
        "Long": {"input": {"required": {"steps": ["INT", {"default": 1}]}}, "long_running": True, **_OUT},
        "Load": {"input": {"required": {"ckpt_name": [[], {}]}}, **_OUT},
    },
    model_inputs={"Load": {"ckpt_name": "checkpoints"}})


class FakePool:
    """An ExecutionPool holding up to ``capacity`` jobs; long-running ones only when ``take_long``."""

    def __init__(self, capacity: int = 1) -> None:
        self.capacity = capacity
        self.take_long = True
        self.listener: PoolListener | None = None
        self.submitted: list[Job] = []
        self.held: set[str] = set()
        self.cancelled: list[str] = []
        self.freed = 0
        self.stopped = False

    async def start(self, listener: PoolListener) -> None:
        self.listener = listener

    async def stop(self) -> None:
        self.stopped = True

    def submit(self, job: Job) -> bool:
        if not self.has_capacity() or (job.long_running and not self.take_long):
            return False
        self.submitted.append(job)
        self.held.add(job.prompt_id)
        return True

    def has_capacity(self) -> bool:
        return len(self.held) < self.capacity

    def cancel(self, prompt_id: str) -> bool:
        self.cancelled.append(prompt_id)
        return prompt_id in self.held

    def interrupt(self, prompt_id: str | None) -> list[str]:
        return sorted(self.held) if prompt_id is None else [p for p in self.held if p == prompt_id]

    def free(self) -> None:
        self.freed += 1

    def stats(self) -> list[dict[str, Any]]:
        return [{"index": 0, "device": "cpu", "pid": 1234, "state": "ready"}]

    async def schemas(self, timeout: float = 30.0) -> NodeSchemas | None:
        return SCHEMAS

    # -- what a worker would report ---------------------------------------------------------

    def run(self, prompt_id: str, result: RunResult) -> None:
        assert self.listener is not None
        self.listener.on_event(WORKER, ExecutionStart(prompt_id=prompt_id))
        self.listener.on_event(WORKER, Executing(prompt_id=prompt_id, node_id="1", class_type="Color",
                                                 display_node="1", workflow=WorkflowProgress(
                                                     nodes_done=0, nodes_total=1, fraction=0.0)))
        if isinstance(result, RunOutcome) and result.status == "success":
            self.listener.on_event(WORKER, ExecutionSuccess(prompt_id=prompt_id))
        self.held.discard(prompt_id)
        self.listener.on_finished(WORKER, prompt_id, result)


def test_fake_pool_implements_the_interface() -> None:
    pool: ExecutionPool = FakePool()
    assert pool.has_capacity()


def scenario(body: Callable[[Scheduler, FakePool], Coroutine[Any, Any, None]], tmp_path: Path,
             capacity: int = 1) -> None:
    async def main() -> None:
        pool = FakePool(capacity)
        scheduler = Scheduler(ServerSettings(folders=FolderPaths(base=tmp_path)), pool=pool)
        await scheduler.start()
        scheduler.on_ready(WORKER, SCHEMAS)
        try:
            await body(scheduler, pool)
        finally:
            await scheduler.stop()
        assert pool.stopped

    asyncio.run(main())


def color(red: int = 0) -> dict[str, Any]:
    return {"1": {"class_type": "Color", "inputs": {"red": red}}}


async def submit(scheduler: Scheduler, prompt: dict[str, Any], **extra: Any) -> str:
    return (await scheduler.submit({"prompt": prompt, **extra})).prompt_id


def test_dispatch_follows_queue_order_and_front(tmp_path: Path) -> None:
    async def body(scheduler: Scheduler, pool: FakePool) -> None:
        first = await submit(scheduler, color(1))
        second = await submit(scheduler, color(2))
        urgent = await submit(scheduler, color(3), front=True)
        assert [j.prompt_id for j in pool.submitted] == [first]
        assert [e[1] for e in scheduler.queue_view()["queue_pending"]] == [urgent, first, second]
        pool.run(first, RunOutcome("success"))
        pool.run(urgent, RunOutcome("success"))
        assert [j.prompt_id for j in pool.submitted] == [first, urgent, second]
        job = pool.submitted[0]
        assert job.prompt == color(1) and job.outputs_to_execute == ("1",) and not job.long_running

    scenario(body, tmp_path)


def test_completion_writes_history_resolves_waiters_and_drops_the_record(tmp_path: Path) -> None:
    async def body(scheduler: Scheduler, pool: FakePool) -> None:
        prompt_id = await submit(scheduler, color(1))
        waiter = scheduler.wait_for(prompt_id)
        assert set(scheduler.records) == {prompt_id}
        pool.run(prompt_id, RunOutcome("success", {"1": {"text": ["ok"]}}))
        item = await asyncio.wait_for(waiter, 1)
        assert item.status == "success" and item.outputs == {"1": {"text": ["ok"]}}
        assert item.worker == {"index": 0, "device": "cpu", "pid": 1234}
        kinds = [kind for kind, _ in item.messages]
        assert kinds == ["execution_start", "execution_success"]
        assert scheduler.records == {} and scheduler.pending == []
        assert scheduler.wait_for(prompt_id).result().status == "success"

    scenario(body, tmp_path)


@pytest.mark.parametrize("failure, reason", [
    (RunFailure("validation", "WorkflowInvalid", "Prompt outputs failed validation: checkpoint gone"),
     "checkpoint gone"),
    (RunFailure("worker_died", "WorkerDied", "worker process for cpu died from SIGKILL while running node 1 (Color)",
                node_id="1", node_type="Color"), "died from SIGKILL"),
    (RunFailure("node", "ValueError", "boom", node_id="1", node_type="Color", traceback=("tb",)), "boom"),
])
def test_failures_reach_history_and_jobs_with_their_reason(tmp_path: Path, failure: RunFailure,
                                                            reason: str) -> None:
    async def body(scheduler: Scheduler, pool: FakePool) -> None:
        prompt_id = await submit(scheduler, color(1))
        pool.run(prompt_id, failure)
        item = scheduler.store.get(prompt_id)
        assert item is not None and item.status == "error"
        assert item.error == failure.as_dict()
        job = job_entry(item)
        assert job["status"] == "failed" and reason in job["execution_error"]["exception_message"]
        assert job["execution_error"]["node_id"] == (failure.node_id or "")
        errors = [data for kind, data in item.messages if kind == "execution_error"]
        # A node failure arrives as the run's own event; the queue reports every other kind once.
        assert len(errors) == (0 if failure.kind == "node" else 1)
        assert scheduler.records == {}

    scenario(body, tmp_path)


def test_extra_pnginfo_that_is_no_object_is_refused_and_never_breaks_the_jobs_list(tmp_path: Path) -> None:
    async def body(scheduler: Scheduler, pool: FakePool) -> None:
        with pytest.raises(SubmissionError, match="extra_pnginfo must be an object"):
            await submit(scheduler, color(1), extra_data={"extra_pnginfo": "not an object"})
        # A row stored before submissions were checked is still listed (GET /jobs answered 500).
        item = scheduler.store.add("old", color(1), {"extra_pnginfo": ["x"]}, ["1"], client_id=None)
        assert job_entry(item)["id"] == "old" and "workflow_id" not in job_entry(item)

    scenario(body, tmp_path)


def test_cancel_a_prompt_not_yet_handed_out(tmp_path: Path) -> None:
    async def body(scheduler: Scheduler, pool: FakePool) -> None:
        running = await submit(scheduler, color(1))
        waiting = await submit(scheduler, color(2))
        waiter = scheduler.wait_for(waiting)
        assert scheduler.cancel([waiting, "unknown"]) == [waiting]
        assert (await asyncio.wait_for(waiter, 1)).status == "cancelled"
        assert set(scheduler.records) == {running} and scheduler.pending == []
        pool.run(running, RunOutcome("success"))
        assert [j.prompt_id for j in pool.submitted] == [running] and scheduler.records == {}

    scenario(body, tmp_path)


def test_cancel_a_prompt_the_pool_holds(tmp_path: Path) -> None:
    async def body(scheduler: Scheduler, pool: FakePool) -> None:
        held = await submit(scheduler, color(1))
        assert scheduler.cancel([held]) == [held] and pool.cancelled == [held]
        assert held in scheduler.records  # until the pool says it dropped it
        pool.held.discard(held)
        scheduler.on_dropped(held)
        assert scheduler.records == {} and scheduler.store.get(held).status == "cancelled"  # type: ignore[union-attr]

    scenario(body, tmp_path)


def test_a_job_dropped_unstarted_after_an_interrupt_ends_interrupted(tmp_path: Path) -> None:
    async def body(scheduler: Scheduler, pool: FakePool) -> None:
        prompt_id = await submit(scheduler, color(1))
        assert scheduler.interrupt(None) == [prompt_id]
        pool.held.discard(prompt_id)
        scheduler.on_dropped(prompt_id)
        assert scheduler.store.get(prompt_id).status == "interrupted"  # type: ignore[union-attr]
        assert scheduler.records == {}

    scenario(body, tmp_path)


def test_jobs_handed_back_are_queued_again_in_order(tmp_path: Path) -> None:
    async def body(scheduler: Scheduler, pool: FakePool) -> None:
        ids = [await submit(scheduler, color(i)) for i in range(3)]
        assert [j.prompt_id for j in pool.submitted] == ids[:2]
        pool.held.clear()
        pool.capacity = 0
        scheduler.on_returned(ids[:2])
        assert [p for _, p in scheduler.pending] == ids
        pool.capacity = 3
        scheduler.dispatch()
        assert [j.prompt_id for j in pool.submitted][2:] == ids

    scenario(body, tmp_path, capacity=2)


def test_long_job_waits_while_short_ones_go_ahead(tmp_path: Path) -> None:
    async def body(scheduler: Scheduler, pool: FakePool) -> None:
        pool.take_long = False
        long_id = await submit(scheduler, {"1": {"class_type": "Long", "inputs": {"steps": 5}}})
        short = await submit(scheduler, color(1))
        assert [j.prompt_id for j in pool.submitted] == [short]
        assert [p for _, p in scheduler.pending] == [long_id]
        pool.take_long = True
        pool.run(short, RunOutcome("success"))
        assert pool.submitted[-1].prompt_id == long_id and pool.submitted[-1].long_running

    scenario(body, tmp_path, capacity=2)


def test_jobs_carry_the_model_files_they_pick(tmp_path: Path) -> None:
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints" / "a.safetensors").write_bytes(b"x")

    async def body(scheduler: Scheduler, pool: FakePool) -> None:
        await submit(scheduler, {"1": {"class_type": "Load", "inputs": {"ckpt_name": "a.safetensors"}}})
        assert pool.submitted[0].models == frozenset({"checkpoints/a.safetensors"})
        scheduler.free()
        assert pool.freed == 1

    scenario(body, tmp_path)


def test_invalid_prompts_are_refused_before_the_queue(tmp_path: Path) -> None:
    async def body(scheduler: Scheduler, pool: FakePool) -> None:
        with pytest.raises(SubmissionError) as refused:
            await submit(scheduler, {"1": {"class_type": "Color", "inputs": {"red": 999}}})
        assert refused.value.body["node_errors"]["1"]["errors"][0]["type"] == "value_bigger_than_max"
        with pytest.raises(SubmissionError, match="number must be a finite number"):
            await submit(scheduler, color(), number=float("nan"))
        prompt_id = await submit(scheduler, color(), prompt_id="mine")
        with pytest.raises(SubmissionError, match="new, unique"):
            await submit(scheduler, color(), prompt_id=prompt_id)
        assert scheduler.queue_remaining() == 1 and set(scheduler.records) == {"mine"}

    scenario(body, tmp_path)


def test_valid_outputs_run_and_invalid_ones_are_reported_as_comfyui_does(tmp_path: Path) -> None:
    async def body(scheduler: Scheduler, pool: FakePool) -> None:
        mixed = {**color(1), "2": {"class_type": "Color", "inputs": {"red": 999}}}
        submitted = await scheduler.submit({"prompt": mixed})
        assert list(submitted.node_errors) == ["2"]
        assert submitted.node_errors["2"]["errors"][0]["type"] == "value_bigger_than_max"
        assert submitted.node_errors["2"]["dependent_outputs"] == ["2"]
        assert pool.submitted[-1].prompt_id == submitted.prompt_id and pool.submitted[-1].outputs_to_execute == ("1",)
        both_bad = {"1": {"class_type": "Color", "inputs": {"red": -1}}, "2": mixed["2"]}
        with pytest.raises(SubmissionError) as refused:
            await submit(scheduler, both_bad)
        assert set(refused.value.body["node_errors"]) == {"1", "2"}
        assert refused.value.body["error"]["type"] == "prompt_outputs_failed_validation"

    scenario(body, tmp_path)


def test_events_of_an_unknown_prompt_are_ignored(tmp_path: Path) -> None:
    async def body(scheduler: Scheduler, pool: FakePool) -> None:
        scheduler.on_event(WORKER, ExecutionStart(prompt_id="nobody"))
        scheduler.on_finished(WORKER, "nobody", RunOutcome("success"))
        assert scheduler.records == {} and scheduler.store.get("nobody") is None

    scenario(body, tmp_path)


def test_the_end_of_a_prompt_is_success_then_status_then_executing_null(tmp_path: Path) -> None:
    """ComfyUI's order, which clients wait on: ``executing`` null comes last, after the status
    that no longer counts the prompt."""
    async def body(scheduler: Scheduler, pool: FakePool) -> None:
        sent: list[tuple[str | None, dict[str, Any]]] = []
        scheduler.hub.send = lambda client, payload: sent.append((client, payload))  # type: ignore[method-assign]
        prompt_id = await submit(scheduler, color(1), client_id="c")
        sent.clear()
        pool.run(prompt_id, RunOutcome("success"))
        tail = [(client, m["type"]) for client, m in sent if m["type"] != "progress_state"][-3:]
        assert tail == [("c", "execution_success"), (None, "status"), ("c", "executing")]
        assert sent[-1][1]["data"] == {"node": None, "display_node": None, "prompt_id": prompt_id}
        assert sent[-2][1]["data"]["status"]["exec_info"]["queue_remaining"] == 0

    scenario(body, tmp_path)


def test_ready_means_a_worker_reported_ready(tmp_path: Path) -> None:
    async def main() -> None:
        pool = FakePool()
        scheduler = Scheduler(ServerSettings(folders=FolderPaths(base=tmp_path)), pool=pool)
        await scheduler.start()
        try:
            assert not await scheduler.wait_ready(0.05)  # started, but no worker has said Ready
            asyncio.get_running_loop().call_later(0.05, scheduler.on_ready, WORKER, SCHEMAS)
            assert await scheduler.wait_ready(5)
        finally:
            await scheduler.stop()

    asyncio.run(main())
