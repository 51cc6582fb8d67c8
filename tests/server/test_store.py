"""The SQLite queue store: order, state changes, recovery after a restart, history windows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from server.execution.outcome import RunFailure
from server.queue.store import QueueStore

PROMPT = {"1": {"class_type": "X", "inputs": {}}}


@pytest.fixture
def store(tmp_path: Path) -> QueueStore:
    return QueueStore(tmp_path / "q.sqlite3")


def _add(store: QueueStore, prompt_id: str, **options: object) -> None:
    store.add(prompt_id, PROMPT, {}, ["1"], client_id=None, **options)  # type: ignore[arg-type]


def test_queue_order_front_and_explicit_numbers(store: QueueStore) -> None:
    _add(store, "a")
    _add(store, "b")
    _add(store, "front", front=True)
    _add(store, "between", number=0.5)
    assert store.pending_ids() == ["front", "a", "between", "b"]
    assert [i.comfy_number for i in store.by_status("pending")] == [-1, 0, 0.5, 1]


def test_running_finishing_and_the_history_entry(store: QueueStore) -> None:
    _add(store, "a")
    store.mark_running("a", {"index": 0, "device": "cpu"})
    store.mark_running("a")  # only a pending prompt starts: the attempt is counted once
    item = store.get("a")
    assert item is not None and item.status == "running" and item.attempts == 1
    failure = RunFailure("node", "ValueError", "boom", node_id="1", node_type="X")
    store.finish("a", "error", messages=[["execution_error", failure.execution_error("a")]], error=failure.as_dict())
    entry = store.get("a").history_entry()  # type: ignore[union-attr]
    assert entry["status"]["status_str"] == "error" and entry["status"]["error"]["exception_message"] == "boom"
    assert entry["status"]["worker"] == {"index": 0, "device": "cpu"} and entry["prompt"][1] == "a"
    with pytest.raises(AssertionError, match="final status"):
        store.finish("a", "running")  # type: ignore[arg-type]


def test_cancel_only_touches_pending_prompts(store: QueueStore) -> None:
    for prompt_id in ("a", "b", "c"):
        _add(store, prompt_id)
    store.mark_running("a")
    assert store.cancel(["a", "b", "zzz"]) == ["b"]
    assert store.cancel_all_pending() == ["c"]
    assert store.count("pending", "running") == 1
    assert store.history() == []  # cancelled prompts are not history


def test_recover_requeues_once_then_fails_with_a_server_restart(store: QueueStore) -> None:
    _add(store, "a")
    store.mark_running("a")
    assert store.recover(max_attempts=2) == (["a"], [])
    store.mark_running("a")
    assert store.recover(max_attempts=2) == ([], ["a"])
    item = store.get("a")
    assert item is not None and item.status == "error"
    failure = RunFailure.from_dict(item.error or {})
    assert failure.kind == "server_restart" and "2 time(s)" in failure.exception_message
    assert item.messages[-1][0] == "execution_error"


def test_history_window_and_delete(store: QueueStore) -> None:
    for prompt_id in ("a", "b", "c"):
        _add(store, prompt_id)
        store.finish(prompt_id, "success")
    assert [i.prompt_id for i in store.history()] == ["a", "b", "c"]
    assert [i.prompt_id for i in store.history(max_items=2)] == ["b", "c"]
    assert [i.prompt_id for i in store.history(max_items=1, offset=1)] == ["b"]
    store.delete_history(["b"])
    assert [i.prompt_id for i in store.history()] == ["a", "c"]
    store.delete_history(None)
    assert store.history() == []


def test_a_database_from_before_the_worker_column_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE prompts (prompt_id TEXT PRIMARY KEY, number REAL NOT NULL, status TEXT NOT NULL,"
               " prompt TEXT NOT NULL, extra_data TEXT NOT NULL, outputs_to_execute TEXT NOT NULL, client_id TEXT,"
               " outputs TEXT NOT NULL DEFAULT '{}', messages TEXT NOT NULL DEFAULT '[]', error TEXT,"
               " attempts INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, started REAL, finished REAL)")
    db.execute("INSERT INTO prompts (prompt_id, number, status, prompt, extra_data, outputs_to_execute, created)"
               " VALUES ('old', 0, 'pending', '{}', '{}', '[]', 0)")
    db.commit()
    db.close()
    store = QueueStore(path)
    store.mark_running("old", {"index": 1, "device": "cpu"})
    assert store.get("old").worker == {"index": 1, "device": "cpu"}  # type: ignore[union-attr]
