"""What a worker keeps once idle: its output cache trimmed to the last prompt's outputs (what a
re-run of it needs), or everything, as configured."""

from __future__ import annotations

import threading
from multiprocessing import Pipe

import pytest

from graph_runtime.folders import FolderPaths
from server.execution.messages import Done, Freed, Ready, Run, Stop, WorkerConfig
from server.execution.worker import IDLE_TIDY_SECONDS, _Worker
from tests.server.conftest import wait_until
from tests.server.test_worker_writes import job, received


def run_two_prompts(tmp_path, when_idle: str) -> tuple[_Worker, list[int]]:
    """A worker runs two prompts of different colours, then idles; returns it and the cache sizes
    it reported: in each Done, then in a Freed if idling released outputs."""
    server_end, worker_end = Pipe()
    config = WorkerConfig(device="cpu", folders=FolderPaths(base=tmp_path), builtin_plugins=("nodes.core",),
                          cache_when_idle=when_idle)
    worker = _Worker(config, worker_end)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    assert server_end.poll(60) and isinstance(server_end.recv(), Ready)
    entries = []
    for prompt_id, color in (("p1", 0x102030), ("p2", 0x405060)):
        server_end.send(Run(job(prompt_id, color, prompt_id)))
        done = [m for m in received(server_end, until=prompt_id) if isinstance(m, Done)]
        entries.append(done[0].cache_stats["entries"])
    wait_until(lambda: worker.jobs.empty(), timeout=10)
    threading.Event().wait(IDLE_TIDY_SECONDS * 4)  # the idle tidy runs after IDLE_TIDY_SECONDS
    while server_end.poll(1):
        message = server_end.recv()
        assert isinstance(message, Freed)
        entries.append(message.cache_stats["entries"])
    server_end.send(Stop())
    thread.join(30)
    return worker, entries


@pytest.mark.parametrize("when_idle, kept, reported", [("last-prompt", 2, [2, 4, 2]), ("all", 4, [2, 4])])
def test_an_idle_worker_keeps_the_last_prompts_outputs(tmp_path, when_idle, kept, reported):
    worker, entries = run_two_prompts(tmp_path, when_idle)
    # both prompts' EmptyImage and SaveImage outputs while busy; the trimmed cache told the server
    assert entries == reported
    assert len(worker.runtime.cache) == kept
    # what stays is the last prompt's: re-running it finds every node cached
    cached = []
    worker.runtime.execute(job("again", 0x405060, "p2").prompt, listeners=[cached.append])
    assert [e for e in cached if type(e).__name__ == "ExecutionCached"][0].nodes == ["1", "2"]
