"""Everything a worker sends, in order, from one sender thread.

The run's thread only queues. The sender takes whatever has queued up and sends the graph_runtime
events among it as one ``Events`` message (a fast prompt's events come in bursts: one pipe write
and one wake-up of the server's loop for all of them). A file write a node handed to
``BackgroundWrites`` is queued as a barrier at the moment it is submitted: nothing queued after it
(that node's ``executed``, the prompt's ``execution_success`` and ``Done``, the next prompt's
events) is sent before the file is completely written. The run's thread meanwhile goes on with the
next prompt.

A write that fails fails its prompt as the node would have: an ``execution_error`` naming the node
is sent in place of the prompt's remaining events, and its ``Done`` carries that failure.
"""

from __future__ import annotations

import os
import queue
import threading
import traceback
from collections.abc import Callable
from typing import Protocol

from graph_runtime.deferred import PendingWrite
from graph_runtime.events import ExecutionError
from graph_runtime.node_calls import qualname
from server.execution.messages import Done, Events, FromWorker, WorkerEvent
from server.execution.outcome import RunFailure


class Link(Protocol):
    """A worker's end of its link to the server: a pipe ``Connection`` or a Ray actor's mailbox."""

    def send(self, message: FromWorker) -> None: ...


class Outbox:
    """Sends on ``link`` from its own thread. ``on_write_failed`` is called (on the sender thread)
    after a background write failed, so the worker can drop cached outputs that name the file."""

    def __init__(self, link: Link, *, on_write_failed: Callable[[], None] = lambda: None) -> None:
        self._link = link
        self._on_write_failed = on_write_failed
        self._queue: queue.SimpleQueue[FromWorker | PendingWrite | None] = queue.SimpleQueue()
        # Prompts whose write failed: the execution_error sent for them, until their Done.
        self._failed: dict[str, ExecutionError] = {}
        self._thread = threading.Thread(target=self._loop, name="worker-send", daemon=True)
        self._thread.start()

    def send(self, message: FromWorker) -> None:
        self._queue.put(message)

    def wait_for(self, write: PendingWrite) -> None:
        """Send nothing queued after this call before ``write`` has finished."""
        self._queue.put(write)

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued (waiting for its writes), then stop the sender thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        try:
            while True:
                items = [self._queue.get()]
                while True:  # and whatever queued up meanwhile, sent together
                    try:
                        items.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                if not self._deliver(items):
                    return
        except (OSError, EOFError, ValueError):
            return  # the server is gone; the control thread ends the process
        except Exception:  # noqa: BLE001 - a worker that can no longer report must not linger
            traceback.print_exc()
            os._exit(70)  # the pool sees the process end, fails its prompt and starts a new one

    def _deliver(self, items: list[FromWorker | PendingWrite | None]) -> bool:
        events: list[WorkerEvent] = []
        for item in items:
            if isinstance(item, WorkerEvent):
                if item.event.prompt_id not in self._failed:
                    events.append(item)
                continue
            self._flush(events)
            if item is None:
                return False
            if isinstance(item, PendingWrite):
                self._settle(item)
            else:
                self._link.send(self._final(item))
        self._flush(events)
        return True

    def _flush(self, events: list[WorkerEvent]) -> None:
        if len(events) == 1:
            self._link.send(events[0])
        elif events:
            self._link.send(Events(tuple(e.event for e in events)))
        events.clear()

    def _settle(self, write: PendingWrite) -> None:
        try:
            write.future.result()
            return
        except Exception as exc:  # noqa: BLE001 - reported as the node's failure
            cause = exc
        if write.prompt_id in self._failed:
            return  # its prompt already failed: the first failure is the one reported
        error = ExecutionError(prompt_id=write.prompt_id, node_id=write.node_id, node_type=write.class_type,
                               executed=[], exception_type=qualname(cause),
                               exception_message=f"could not write an output file: {cause}",
                               traceback=traceback.format_exception(cause), current_inputs={}, current_outputs={})
        self._failed[write.prompt_id] = error
        self._on_write_failed()
        self._link.send(WorkerEvent(error))

    def _final(self, message: FromWorker) -> FromWorker:
        """``message``, or for the ``Done`` of a prompt whose write failed, that failure."""
        if isinstance(message, Done) and message.prompt_id in self._failed:
            error = self._failed.pop(message.prompt_id)
            outputs = {node: ui for node, ui in message.result.outputs.items() if node != error.node_id}
            return Done(message.prompt_id, RunFailure.of_node(error, outputs), message.resources, message.cache_stats)
        return message
