"""Kill drills: a worker killed mid-prompt, a crashing node, a server stopped with a full queue."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from server.client import Client
from tests.server.conftest import color_prompt, slow_prompt, start_server, state_of
from tests.server.conftest import wait_until as _wait


def _worker(http):
    return http.get("/system_stats")["nodeloom"]["workers"][0]


def test_kill_9_worker_mid_prompt_fails_it_and_the_next_runs(tmp_path):
    server = start_server(tmp_path)
    try:
        with Client(server.url, timeout=60) as http:
            victim = http.submit(slow_prompt(steps=400, delay=0.05, previews=False))["prompt_id"]
            _wait(lambda: _worker(http)["running"] == victim)
            os.kill(_worker(http)["pid"], signal.SIGKILL)
            entry = _wait(lambda: state_of(http, victim) == "error" and http.history(victim))
            error = entry[victim]["status"]["error"]
            assert "SIGKILL" in error["exception_message"] and "node 1 (TestSlow)" in error["exception_message"]
            after = http.submit(color_prompt(red=1), wait=True, timeout=90)
            assert after["status"] == "success"
            assert _worker(http)["restarts"] == 1
    finally:
        server.stop()


def test_crashing_node_does_not_take_the_server_down(tmp_path):
    server = start_server(tmp_path)
    try:
        with Client(server.url, timeout=90) as http:
            crashed = http.submit({"1": {"class_type": "TestCrash", "inputs": {"seed": 1}}}, wait=True, timeout=90)
            assert crashed["status"] == "error" and "SIGSEGV" in crashed["error"]["exception_message"]
            assert http.submit(color_prompt(green=1), wait=True, timeout=90)["status"] == "success"
    finally:
        server.stop()


@pytest.mark.slow
def test_restart_keeps_the_queue_and_requeues_the_running_prompt_once(tmp_path):
    server = start_server(tmp_path)
    with Client(server.url, timeout=60) as http:
        running = http.submit(slow_prompt(steps=400, delay=0.05, previews=False))["prompt_id"]
        queued = [http.submit(color_prompt(red=i + 1))["prompt_id"] for i in range(3)]
        _wait(lambda: _worker(http)["running"] == running)
    server.stop(signal.SIGKILL)  # no chance to save anything
    restarted = start_server(tmp_path, port=server.port)
    try:
        with Client(restarted.url, timeout=60) as http:
            status = http.job(running)["execution_status"]
            # re-queued at the head and started again: its second attempt
            assert status["state"] in ("pending", "running") and status["attempts"] <= 2
            for prompt_id in queued:
                _wait(lambda pid=prompt_id: state_of(http, pid) == "success")
            http.interrupt(running)
    finally:
        restarted.stop()


def test_prompt_running_at_two_server_deaths_fails_and_the_queue_survives(tmp_path):
    first = start_server(tmp_path)
    with Client(first.url, timeout=60) as http:
        victim = http.submit(slow_prompt(steps=400, delay=0.05, previews=False))["prompt_id"]
        _wait(lambda: _worker(http)["running"] == victim)
    first.stop(signal.SIGKILL)  # attempt 1 lost without a word

    second = start_server(tmp_path, port=first.port)
    with Client(second.url, timeout=60) as http:
        _wait(lambda: _worker(http)["running"] == victim)
        assert http.job(victim)["execution_status"]["attempts"] == 2
        queued = [http.submit(color_prompt(blue=i + 1))["prompt_id"] for i in range(3)]
        assert [e[1] for e in http.queue()["queue_pending"]] == queued
    second.stop()  # a clean stop (SIGTERM) with the victim running and three prompts queued

    third = start_server(tmp_path, port=first.port)
    try:
        with Client(third.url, timeout=60) as http:
            status = http.history(victim)[victim]["status"]
            assert status["state"] == "error" and status["attempts"] == 2
            assert status["error"]["type"] == "server_restart" and "2 time(s)" in status["error"]["exception_message"]
            assert status["messages"][-1][0] == "execution_error"
            for prompt_id in queued:
                _wait(lambda pid=prompt_id: state_of(http, pid) == "success")
            assert http.history(queued[0])[queued[0]]["status"]["attempts"] == 1
    finally:
        third.stop()


def test_a_restart_removes_files_left_half_written_and_view_never_serves_one(tmp_path):
    # a worker killed mid-write leaves <name>.partial behind; the next start removes it
    (tmp_path / "output" / "sub").mkdir(parents=True)
    left = [tmp_path / "output" / "shot_00001_.png.partial", tmp_path / "output" / "sub" / "a_00002_.png.partial",
            tmp_path / "temp" / "preview_00001_.png.partial"]
    left[2].parent.mkdir()
    for path in left:
        path.write_bytes(b"")
    kept = tmp_path / "output" / "notes.txt"
    kept.write_text("mine")
    server = start_server(tmp_path)
    try:
        assert not any(path.exists() for path in left) and kept.read_text() == "mine"
        left[0].write_bytes(b"\x89PNG")  # as one being written now
        answer = httpx.get(f"{server.url}/view", params={"filename": left[0].name, "type": "output"})
        assert answer.status_code == 404 and "no file" in answer.text
    finally:
        server.stop()
