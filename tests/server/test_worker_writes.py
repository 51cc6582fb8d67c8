"""A real worker (the core node pack, on a pipe) writing its outputs off the run's thread: the
next prompt runs while the last one's files are written, and ``executed`` and ``Done`` reach the
server only once the files they name are complete."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
from PIL import Image

from graph_runtime.events import Event, Executed, ExecutionError
from graph_runtime.folders import FolderPaths
from nodes.core import imaging
from nodes.core.imaging import PARTIAL_SUFFIX
from server.execution.messages import Done, Events, Job, Ready, Run, Stop, WorkerConfig, WorkerEvent
from server.execution.outcome import RunFailure
from server.execution.worker import _Worker
from tests.server.conftest import wait_until


def job(prompt_id: str, color: int, prefix: str) -> Job:
    return Job(prompt_id, {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 24, "height": 16, "batch_size": 2, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}}}, {})


@pytest.fixture
def worker(tmp_path) -> Iterator[tuple[Connection, Path]]:
    """A worker thread on one end of a pipe; the test is the server at the other."""
    server_end, worker_end = Pipe()
    config = WorkerConfig(device="cpu", folders=FolderPaths(base=tmp_path), builtin_plugins=("nodes.core",))
    thread = threading.Thread(target=lambda: _Worker(config, worker_end).run_forever(), daemon=True)
    thread.start()
    assert server_end.poll(60) and isinstance(server_end.recv(), Ready)
    yield server_end, tmp_path / "output"
    server_end.send(Stop())  # the worker ends its loop (closing the pipe would end this process)
    thread.join(30)


def received(conn: Connection, until: str, timeout: float = 30.0) -> Iterator[object]:
    """Every message (events unpacked) up to and including the Done of ``until``."""
    while conn.poll(timeout):
        message = conn.recv()
        for item in message.events if isinstance(message, Events) else [message]:
            yield item.event if isinstance(item, WorkerEvent) else item
            if isinstance(item, Done) and item.prompt_id == until:
                return
    raise AssertionError(f"no Done for {until} within {timeout} s")


def assert_complete(output: Path, event: Executed, color: tuple[int, int, int]) -> None:
    for image in event.output["images"]:
        path = output / image["filename"]
        assert path.is_file() and not path.with_name(path.name + PARTIAL_SUFFIX).exists()
        with Image.open(path) as picture:
            picture.load()  # the whole file decodes: it was complete when `executed` arrived
            assert picture.size == (24, 16) and picture.getpixel((5, 5)) == color


def test_next_prompt_runs_while_files_are_written_and_executed_waits_for_them(worker, monkeypatch):
    conn, output = worker
    gate = threading.Event()
    real = imaging.write_png
    monkeypatch.setattr(imaging, "write_png", lambda *a, **k: (gate.wait(30), real(*a, **k)))
    conn.send(Run(job("p1", 0x102030, "a")))
    conn.send(Run(job("p2", 0x405060, "b")))
    reserved = [output / f"{p}_0000{n}_.png{PARTIAL_SUFFIX}" for p in "ab" for n in (1, 2)]
    # p2's SaveImage runs (and reserves its names) while p1's files are still being written
    wait_until(lambda: all(path.exists() for path in reserved))
    early: list[Event] = []
    while conn.poll(0.3):
        message = conn.recv()
        early += list(message.events) if isinstance(message, Events) else [message.event]
    assert early and all(e.prompt_id == "p1" and not isinstance(e, Executed) for e in early)

    gate.set()
    seen: list[object] = []
    for item in received(conn, until="p2"):
        if isinstance(item, Executed):
            assert_complete(output, item, (0x10, 0x20, 0x30) if item.prompt_id == "p1" else (0x40, 0x50, 0x60))
        seen.append(item)
    done_p1 = next(i for i, item in enumerate(seen) if isinstance(item, Done) and item.prompt_id == "p1")
    assert all(getattr(item, "prompt_id", "") == "p1" for item in seen[:done_p1])  # p2 reported after p1 ended
    assert [item.result.status for item in seen if isinstance(item, Done)] == ["success", "success"]
    assert sorted(p.name for p in output.iterdir()) == ["a_00001_.png", "a_00002_.png", "b_00001_.png", "b_00002_.png"]


def test_a_write_that_fails_fails_its_prompt_at_the_save_node(worker, monkeypatch):
    conn, output = worker
    real_save = Image.Image.save

    def disk_full(picture, fp, *args, **kwargs):
        if Path(fp).name.startswith("bad"):
            raise OSError(28, "No space left on device")
        real_save(picture, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", disk_full)
    conn.send(Run(job("p1", 0x0000FF, "bad")))
    conn.send(Run(job("p2", 0x00FF00, "good")))
    seen = list(received(conn, until="p2"))
    errors = [e for e in seen if isinstance(e, ExecutionError)]
    assert [(e.prompt_id, e.node_id, e.node_type) for e in errors] == [("p1", "2", "SaveImage")]
    assert "No space left on device" in errors[0].exception_message
    assert not any(isinstance(e, Executed) and e.prompt_id == "p1" for e in seen)
    done = {item.prompt_id: item.result for item in seen if isinstance(item, Done)}
    assert isinstance(done["p1"], RunFailure) and done["p1"].node_type == "SaveImage" and done["p1"].outputs == {}
    assert done["p2"].status == "success"
    assert not list(output.glob("bad*"))  # no partial file left behind

    # The same prompt again, the disk fixed: the save runs again rather than reporting the
    # cached names of files that were never written.
    monkeypatch.setattr(Image.Image, "save", real_save)
    conn.send(Run(job("p3", 0x0000FF, "bad")))
    again = [e for e in received(conn, until="p3") if isinstance(e, Executed)]
    assert [e.cached for e in again] == [False]
    assert_complete(output, again[0], (0, 0, 0xFF))
