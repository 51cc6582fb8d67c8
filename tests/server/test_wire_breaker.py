"""Websocket and submission limits found by hostile clients: JSON nested past the HTTP parser's
depth, stored rows that cannot be decoded, prompts with too many nodes, progress reports built for
nobody, uploads decoded on the event loop, ids that cannot be stored, ids echoed whole."""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from graph_runtime.events import Executing, WorkflowProgress
from graph_runtime.folders import FolderPaths
from graph_runtime.input_limits import MAX_JSON_DEPTH, InputLimits, too_deep
from graph_runtime.validation import validate
from server.cli import add_serve_arguments, settings_from
from server.http import routes_ws
from server.http.files import Stored
from server.queue.scheduler import Scheduler, SubmissionError
from server.queue.store import QueueStore
from server.settings import ServerSettings
from server.wire import protocol
from server.wire.hub import Hub
from server.wire.protocol import parse_json
from tests.server.test_scheduler import WORKER, FakePool, color, scenario

FLOW = WorkflowProgress(nodes_done=0, nodes_total=1, fraction=0.0)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def deep_value(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


# -- 1: nesting ------------------------------------------------------------------------------

def test_websocket_parser_refuses_what_json_loads_accepts() -> None:
    text = '{"id": 1, "op": "submit", "data": {"extra_data": {"extra_pnginfo": ' + nested(300) + "}}}"
    json.loads(text)  # the old parser took it, and the store could not read it back
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_json(text)
    assert parse_json(nested(MAX_JSON_DEPTH - 5)) is not None


def test_too_deep_counts_without_recursion() -> None:
    assert not too_deep(deep_value(MAX_JSON_DEPTH)) and too_deep(deep_value(MAX_JSON_DEPTH + 1))
    assert too_deep(deep_value(50_000)) and not too_deep("text") and not too_deep({"a": [1, {"b": 2}]})


def test_submission_deeper_than_the_limit_is_refused_and_not_stored(tmp_path: Path) -> None:
    async def body(scheduler: Scheduler, pool: FakePool) -> None:
        for extra in ({"extra_data": {"extra_pnginfo": {"workflow": deep_value(950)}}},
                      {"prompt": {**color(), "2": {"class_type": "Color", "inputs": {"red": deep_value(400)}}}}):
            with pytest.raises(SubmissionError) as refused:
                await scheduler.submit({"prompt": color(), **extra})
            assert refused.value.status == 400 and "nested too deeply" in refused.value.body["error"]["message"]
        assert scheduler.store.count("pending", "running") == 0 and not pool.submitted

    scenario(body, tmp_path)


def test_an_undecodable_row_is_failed_not_fatal(tmp_path: Path) -> None:
    db = tmp_path / "q.sqlite3"
    store = QueueStore(db)
    store.add("good", color(), {}, ["1"], client_id=None)
    store.add("bad", color(), {}, ["1"], client_id=None)
    store.close()
    with sqlite3.connect(db) as raw:  # what an unbounded websocket submission used to leave behind
        raw.execute("UPDATE prompts SET extra_data=? WHERE prompt_id='bad'", (nested(100_000),))

    async def main() -> None:
        scheduler = Scheduler(ServerSettings(folders=FolderPaths(base=tmp_path), db_path=db), pool=FakePool())
        await scheduler.start()  # used to raise RecursionError here
        try:
            assert [e[1] for e in scheduler.queue_view()["queue_pending"]] == ["good"]
            entry = scheduler.history_item("bad")["bad"]
            assert entry["status"]["state"] == "error"
            assert "cannot be decoded" in entry["status"]["error"]["exception_message"]
            assert "bad" in scheduler.history_view(None, 0)
        finally:
            await scheduler.stop()

    asyncio.run(main())


# -- 2: node count and progress reports ------------------------------------------------------

def test_too_many_nodes_is_refused_first_naming_count_and_limit(tmp_path: Path) -> None:
    prompt = {str(i): {"class_type": "Nope", "inputs": {}} for i in range(11)}
    result = validate(prompt, None, ctx=None, limits=InputLimits(max_nodes=10))  # type: ignore[arg-type]
    assert not result.ok and not result.node_errors
    error = result.to_comfy()["error"]
    assert error["type"] == "invalid_prompt" and set(error) == {"type", "message", "details", "extra_info"}
    assert "11" in error["message"] and "at most 10" in error["message"]


def test_max_nodes_flag_reaches_the_scheduler(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--base", str(tmp_path), "--max-nodes", "3"])
    assert settings_from(args, {}).max_nodes == 3
    assert ServerSettings(folders=FolderPaths(base=tmp_path)).max_nodes == 10_000


def test_progress_state_is_not_built_for_nobody(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    real = protocol.message

    def counting(kind: str, data: Any) -> dict[str, Any]:
        built.append(kind)
        return real(kind, data)

    monkeypatch.setattr(protocol, "message", counting)

    async def body(scheduler: Scheduler, pool: FakePool) -> None:
        prompt_id = (await scheduler.submit({"prompt": color(), "client_id": "away"})).prompt_id
        for node in ("1", "1", "1"):
            scheduler.on_event(WORKER, Executing(prompt_id=prompt_id, node_id=node, class_type="Color",
                                                 display_node=node, workflow=FLOW))
        assert "executing" in built and "progress_state" not in built
        scheduler.hub.clients["away"] = object()  # type: ignore[assignment] - only its presence counts
        translator = scheduler.records[prompt_id].translator
        assert any(m["type"] == "progress_state" for m in translator.translate(
            Executing(prompt_id=prompt_id, node_id="1", class_type="Color", display_node="1", workflow=FLOW),
            listening=scheduler.hub.listens("away")).messages)
        del scheduler.hub.clients["away"]

    scenario(body, tmp_path)


def test_hub_encodes_nothing_for_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    import server.wire.hub as hub_module

    def refuse(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("encoded a message nobody receives")

    monkeypatch.setattr(hub_module.json, "dumps", refuse)
    hub = Hub(queue_size=4)
    hub.send(None, {"type": "status"})
    hub.send("someone", {"type": "status"})
    assert not hub.listens(None) and not hub.listens("someone")


# -- 3: uploads off the event loop ----------------------------------------------------------

def test_a_websocket_upload_does_not_block_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release, entered = threading.Event(), threading.Event()

    def blocked_store(*args: Any, **kwargs: Any) -> Stored:
        entered.set()
        assert release.wait(10), "never released"
        return Stored(name="a.png", subfolder="", type="input")

    monkeypatch.setattr(routes_ws, "store_upload", blocked_store)

    async def body(scheduler: Scheduler, pool: FakePool) -> None:
        commands = routes_ws.Commands(scheduler, scheduler.settings)
        upload = asyncio.create_task(commands.upload({"id": 1, "op": "upload", "filename": "a.png"}, b"x"))
        assert await asyncio.to_thread(entered.wait, 10)
        answer = await asyncio.wait_for(commands.handle(2, "queue", {}), 5)  # served meanwhile
        assert answer["ok"] and not upload.done()
        release.set()
        done = await asyncio.wait_for(upload, 10)
        assert done["ok"] and done["data"]["name"] == "a.png"

    scenario(body, tmp_path)


# -- 4: ids that cannot be stored --------------------------------------------------------------

@pytest.mark.parametrize(("field", "value", "problem"), [
    ("prompt_id", "id\udce9", "not valid UTF-8"), ("client_id", "id\udce9", "not valid UTF-8"),
    ("prompt_id", "p" * 257, "too long"), ("client_id", "c" * 257, "too long"),
])
def test_ids_that_cannot_be_stored_are_a_400(tmp_path: Path, field: str, value: str, problem: str) -> None:
    async def body(scheduler: Scheduler, pool: FakePool) -> None:
        commands = routes_ws.Commands(scheduler, scheduler.settings)
        answer = await commands.handle(7, "submit", {"prompt": color(), field: value})
        assert answer["ok"] is False and answer["status"] == 400
        assert field in answer["error"]["error"]["message"] and problem in answer["error"]["error"]["message"]
        json.dumps(answer, ensure_ascii=False).encode()  # the answer itself can be sent
        assert scheduler.store.count("pending", "running") == 0

    scenario(body, tmp_path)


def test_a_lone_surrogate_escape_is_refused_by_the_parser() -> None:
    with pytest.raises(ValueError):
        parse_json('{"id": 1, "op": "submit", "data": {"prompt_id": "id\\udce9"}}')


# -- 5: echoed ids ---------------------------------------------------------------------------

def test_interrupt_echoes_only_the_start_of_a_long_id(tmp_path: Path) -> None:
    async def body(scheduler: Scheduler, pool: FakePool) -> None:
        answer = scheduler.interrupt_answer("x" * 100_000)
        assert answer["reason"] == "unknown_prompt" and len(answer["message"]) < 200
        assert "x" * 64 + "…" in answer["message"]

    scenario(body, tmp_path)

