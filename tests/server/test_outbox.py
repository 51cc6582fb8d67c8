"""The worker's outbox: order kept, events batched, nothing queued after a write sent before the
write has finished, and a failed write failing its prompt at the node that wrote."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

from graph_runtime.deferred import PendingWrite
from graph_runtime.events import Executed, ExecutionError, ExecutionStart, ExecutionSuccess
from server.execution.messages import Done, Events, FromWorker, NodeSchemas, Ready, WorkerEvent
from server.execution.outbox import Outbox
from server.execution.outcome import RunFailure, RunOutcome


class Link:
    def __init__(self) -> None:
        self.sent: queue.Queue[FromWorker] = queue.Queue()

    def send(self, message: FromWorker) -> None:
        self.sent.put(message)

    def next(self, timeout: float = 10.0) -> FromWorker:
        return self.sent.get(timeout=timeout)

    def nothing_for(self, seconds: float) -> bool:
        try:
            message = self.sent.get(timeout=seconds)
        except queue.Empty:
            return True
        raise AssertionError(f"sent too early: {message!r}")


def events_of(message: FromWorker) -> list:
    if isinstance(message, Events):
        return list(message.events)
    assert isinstance(message, WorkerEvent), message
    return [message.event]


def write(prompt_id: str = "p1", node_id: str = "9") -> PendingWrite:
    return PendingWrite(prompt_id, node_id, "SaveImage", Future())


def executed(prompt_id: str = "p1") -> WorkerEvent:
    return WorkerEvent(Executed(prompt_id=prompt_id, node_id="9", display_node="9", output={"images": []}))


def test_messages_keep_their_order_and_events_go_in_batches():
    link = Link()
    outbox = Outbox(link)
    gate = write()
    outbox.wait_for(gate)  # hold the sender so that what follows queues up
    sent = [WorkerEvent(ExecutionStart(prompt_id="p1")), executed(), WorkerEvent(ExecutionSuccess(prompt_id="p1")),
            Done("p1", RunOutcome("success")), WorkerEvent(ExecutionStart(prompt_id="p2"))]
    for message in sent:
        outbox.send(message)
    gate.future.set_result(None)
    batch = link.next()
    assert isinstance(batch, Events) and list(batch.events) == [m.event for m in sent[:3]]
    assert link.next() == sent[3]
    assert events_of(link.next()) == [sent[4].event]
    outbox.close()


def test_nothing_queued_after_a_write_leaves_before_the_write_is_done():
    link = Link()
    outbox = Outbox(link)
    outbox.send(Ready(NodeSchemas({}, {})))
    assert isinstance(link.next(), Ready)
    outbox.send(WorkerEvent(ExecutionStart(prompt_id="p1")))
    pending = write()
    outbox.wait_for(pending)
    outbox.send(executed())
    outbox.send(Done("p1", RunOutcome("success", {"9": {"images": []}})))
    outbox.send(WorkerEvent(ExecutionStart(prompt_id="p2")))  # the next prompt, already running
    assert [type(e) for e in events_of(link.next())] == [ExecutionStart]  # before the write: sent
    assert link.nothing_for(0.3)
    pending.future.set_result(None)
    assert [type(e) for e in events_of(link.next())] == [Executed]
    assert link.next() == Done("p1", RunOutcome("success", {"9": {"images": []}}))
    assert events_of(link.next())[0].prompt_id == "p2"
    outbox.close()


def test_a_failed_write_fails_its_prompt_naming_the_node():
    link = Link()
    failed = threading.Event()
    outbox = Outbox(link, on_write_failed=failed.set)
    pending = write(node_id="9")
    pending.future.set_exception(OSError(28, "No space left on device"))
    outbox.wait_for(pending)
    outbox.send(executed())
    outbox.send(WorkerEvent(ExecutionSuccess(prompt_id="p1")))
    outbox.send(Done("p1", RunOutcome("success", {"9": {"images": [{"filename": "a.png"}]}, "5": {"text": ["x"]}})))
    outbox.send(WorkerEvent(ExecutionSuccess(prompt_id="p2")))

    error = events_of(link.next())[0]
    assert isinstance(error, ExecutionError)
    assert (error.prompt_id, error.node_id, error.node_type, error.exception_type) == ("p1", "9", "SaveImage", "OSError")
    assert "could not write an output file" in error.exception_message and "No space left" in error.exception_message
    done = link.next()  # executed and execution_success of p1 were dropped
    assert isinstance(done, Done) and isinstance(done.result, RunFailure)
    assert (done.result.kind, done.result.node_id, done.result.node_type) == ("node", "9", "SaveImage")
    assert done.result.outputs == {"5": {"text": ["x"]}}  # the files never written are not reported
    after = events_of(link.next())  # another prompt's events are not touched
    assert [(type(e), e.prompt_id) for e in after] == [(ExecutionSuccess, "p2")]
    assert failed.is_set()
    outbox.close()


def test_close_sends_what_is_queued_once_its_writes_finish():
    link = Link()
    outbox = Outbox(link)
    pending = write()
    outbox.wait_for(pending)
    outbox.send(Done("p1", RunOutcome("success")))
    threading.Timer(0.2, pending.future.set_result, args=(None,)).start()
    outbox.close(timeout=10)
    assert link.next(timeout=0) == Done("p1", RunOutcome("success"))
