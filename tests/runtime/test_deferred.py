"""BackgroundWrites: writes run off the submitting thread, each announced before submit returns,
at most max_pending at a time, all finished by close()."""

from __future__ import annotations

import threading
import time

import pytest

from graph_runtime.context import Context, InterruptFlag, Services
from graph_runtime.deferred import BackgroundWrites, PendingWrite
from graph_runtime.folders import FolderPaths


def context(tmp_path, node_id: str = "9") -> Context:
    return Context(prompt_id="p1", node_id=node_id, class_type="SaveImage", folders=FolderPaths(base=tmp_path),
                   services=Services(), interrupt=InterruptFlag(), report_progress=lambda *a: None, extra_data={})


def test_write_runs_on_another_thread_and_is_announced_first(tmp_path):
    announced: list[tuple[PendingWrite, bool]] = []
    ran_on: list[str] = []
    gate = threading.Event()

    def write() -> None:
        gate.wait(10)
        ran_on.append(threading.current_thread().name)

    writes = BackgroundWrites(threads=1, on_submit=lambda p: announced.append((p, p.future.done())))
    pending = writes.submit(context(tmp_path), write)
    # submit returned while the write still waits: the caller went on
    assert announced == [(pending, False)] and not pending.future.done()
    assert (pending.prompt_id, pending.node_id, pending.class_type) == ("p1", "9", "SaveImage")
    gate.set()
    pending.future.result(timeout=10)
    assert ran_on and ran_on[0] != threading.current_thread().name
    writes.close()


def test_submit_waits_while_max_pending_writes_are_unfinished(tmp_path):
    gate = threading.Event()
    writes = BackgroundWrites(threads=1, on_submit=lambda p: None, max_pending=2)
    writes.submit(context(tmp_path), lambda: gate.wait(10))
    writes.submit(context(tmp_path), lambda: None)
    third_done = threading.Event()

    def third() -> None:
        writes.submit(context(tmp_path), lambda: None)
        third_done.set()

    threading.Thread(target=third, daemon=True).start()
    assert not third_done.wait(0.3)  # two unfinished: the third submission waits
    gate.set()
    assert third_done.wait(10)
    writes.close()


def test_close_finishes_every_submitted_write(tmp_path):
    written: list[int] = []
    writes = BackgroundWrites(threads=2, on_submit=lambda p: None)
    for index in range(6):
        writes.submit(context(tmp_path), lambda i=index: (time.sleep(0.01), written.append(i)))
    writes.close()
    assert sorted(written) == list(range(6))


def test_a_failing_write_is_its_future_exception(tmp_path):
    writes = BackgroundWrites(threads=1, on_submit=lambda p: None)

    def fail() -> None:
        raise OSError(28, "No space left on device")

    pending = writes.submit(context(tmp_path), fail)
    with pytest.raises(OSError, match="No space left"):
        pending.future.result(timeout=10)
    # its slot is given back: more writes go through
    for _ in range(10):
        writes.submit(context(tmp_path), lambda: None).future.result(timeout=10)
    writes.close()
