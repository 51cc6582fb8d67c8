"""The queue and history, persisted in SQLite so a restart (even after kill -9) loses nothing.

One row per prompt. ``number`` orders the queue as ComfyUI's does (``front`` submissions get a
number below every other); ``attempts`` counts how often a run was started, so a prompt that was
running when the server died is run once more and then failed instead of crashing it forever.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from server.execution.outcome import RunFailure

log = logging.getLogger(__name__)

Status = Literal["pending", "running", "success", "error", "interrupted", "cancelled"]
FINISHED: frozenset[str] = frozenset({"success", "error", "interrupted", "cancelled"})
# What /history lists: prompts that ran to an end (a prompt cancelled before it ran never did).
IN_HISTORY: frozenset[str] = frozenset({"success", "error", "interrupted"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (
    prompt_id TEXT PRIMARY KEY,
    number REAL NOT NULL,
    status TEXT NOT NULL,
    prompt TEXT NOT NULL,
    extra_data TEXT NOT NULL,
    outputs_to_execute TEXT NOT NULL,
    client_id TEXT,
    outputs TEXT NOT NULL DEFAULT '{}',
    messages TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    worker TEXT
);
CREATE INDEX IF NOT EXISTS prompts_status ON prompts(status, number);
CREATE INDEX IF NOT EXISTS prompts_finished ON prompts(finished);
"""
# Columns added after the first release, for databases created before them.
_ADDED_COLUMNS = {"worker": "TEXT"}


@dataclass
class QueueItem:
    prompt_id: str
    number: float
    status: Status
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: list[str]
    client_id: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    messages: list[list[Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    attempts: int = 0
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    # The worker that ran (or runs) it: {"index", "device"}.
    worker: dict[str, Any] | None = None

    @property
    def comfy_number(self) -> int | float:
        return int(self.number) if float(self.number).is_integer() else self.number

    def queue_entry(self) -> list[Any]:
        """ComfyUI's ``[number, prompt_id, prompt, extra_data, outputs_to_execute]``."""
        return [self.comfy_number, self.prompt_id, self.prompt, self.extra_data, self.outputs_to_execute]

    def history_entry(self) -> dict[str, Any]:
        """ComfyUI's history entry (GET /history lists only finished prompts; webhooks and
        POST /prompt?wait read it too)."""
        completed = self.status == "success"
        status_str = {"success": "success", "pending": "pending", "running": "running"}.get(self.status, "error")
        entry: dict[str, Any] = {
            "prompt": self.queue_entry(),
            "outputs": self.outputs,
            "status": {"status_str": status_str, "completed": completed, "messages": self.messages,
                       "state": self.status, "attempts": self.attempts, "worker": self.worker},
            "meta": {node: {"node_id": node, "display_node": node} for node in self.outputs},
        }
        if self.error is not None:
            entry["status"]["error"] = self.error
        return entry


class QueueStore:
    """All reads and writes happen on the server's event-loop thread; SQLite in WAL mode keeps each
    write well under a millisecond."""

    def __init__(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process kill; only an OS crash may lose the last commits.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.row_factory = sqlite3.Row
        present = {row["name"] for row in self._db.execute("PRAGMA table_info(prompts)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in present:
                self._db.execute(f"ALTER TABLE prompts ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self._db.close()

    # -- writes ------------------------------------------------------------------------------

    def add(self, prompt_id: str, prompt: dict[str, Any], extra_data: dict[str, Any],
            outputs_to_execute: list[str], *, client_id: str | None, front: bool = False,
            number: float | None = None) -> QueueItem:
        """Queue a prompt: at ``number`` when given (ComfyUI's explicit position), else ahead of
        everything (``front``), else behind everything."""
        if number is None:
            bound = self._db.execute("SELECT MIN(number), MAX(number) FROM prompts").fetchone()
            low, high = bound[0], bound[1]
            number = (low - 1 if low is not None else -1) if front else (high + 1 if high is not None else 0)
            if not front and number < 0:
                number = 0
        now = time.time()
        self._db.execute(
            "INSERT INTO prompts (prompt_id, number, status, prompt, extra_data, outputs_to_execute,"
            " client_id, created) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?)",
            (prompt_id, number, json.dumps(prompt), json.dumps(extra_data),
             json.dumps(outputs_to_execute), client_id, now))
        return QueueItem(prompt_id, number, "pending", prompt, extra_data, outputs_to_execute,
                         client_id, created=now)

    def mark_running(self, prompt_id: str, worker: dict[str, Any] | None = None) -> None:
        self._db.execute("UPDATE prompts SET status='running', started=?, attempts=attempts+1, worker=? "
                         "WHERE prompt_id=? AND status='pending'",
                         (time.time(), json.dumps(worker) if worker is not None else None, prompt_id))

    def mark_pending(self, prompt_id: str) -> None:
        self._db.execute("UPDATE prompts SET status='pending' WHERE prompt_id=? AND status='running'",
                         (prompt_id,))

    def finish(self, prompt_id: str, status: Status, *, outputs: dict[str, Any] | None = None,
               messages: list[list[Any]] | None = None, error: dict[str, Any] | None = None) -> None:
        assert status in FINISHED, f"finish() needs a final status, got {status!r}"
        self._db.execute(
            "UPDATE prompts SET status=?, outputs=?, messages=?, error=?, finished=? WHERE prompt_id=?",
            (status, json.dumps(outputs or {}), json.dumps(messages or []),
             json.dumps(error) if error is not None else None, time.time(), prompt_id))

    def cancel(self, prompt_ids: list[str]) -> list[str]:
        """Cancel pending prompts; returns those that were pending."""
        cancelled = []
        for prompt_id in prompt_ids:
            cur = self._db.execute("UPDATE prompts SET status='cancelled', finished=? "
                                   "WHERE prompt_id=? AND status='pending'", (time.time(), prompt_id))
            if cur.rowcount:
                cancelled.append(prompt_id)
        return cancelled

    def cancel_all_pending(self) -> list[str]:
        ids = [row[0] for row in self._db.execute("SELECT prompt_id FROM prompts WHERE status='pending'")]
        return self.cancel(ids)

    def delete_history(self, prompt_ids: list[str] | None) -> None:
        """Hide finished prompts from the history (all when ``prompt_ids`` is None)."""
        if prompt_ids is None:
            self._db.execute("DELETE FROM prompts WHERE status IN ('success','error','interrupted','cancelled')")
            return
        self._db.executemany(
            "DELETE FROM prompts WHERE prompt_id=? AND status IN ('success','error','interrupted','cancelled')",
            [(p,) for p in prompt_ids])

    def recover(self, max_attempts: int) -> tuple[list[str], list[str]]:
        """After a restart: prompts left running go back to the queue, unless they already used
        their attempts (then they fail). Returns (requeued, failed)."""
        rows = self._db.execute("SELECT prompt_id, attempts FROM prompts WHERE status='running'").fetchall()
        requeued, failed = [], []
        for row in rows:
            if row["attempts"] < max_attempts:
                self._db.execute("UPDATE prompts SET status='pending' WHERE prompt_id=?", (row["prompt_id"],))
                requeued.append(row["prompt_id"])
            else:
                failure = RunFailure("server_restart", "ServerRestart",
                                     f"the server stopped while this prompt was running, {row['attempts']} "
                                     "time(s); not retried again")
                self.finish(row["prompt_id"], "error", error=failure.as_dict(),
                            messages=[["execution_error", failure.execution_error(row["prompt_id"])]])
                failed.append(row["prompt_id"])
        return requeued, failed

    # -- reads -------------------------------------------------------------------------------

    def get(self, prompt_id: str) -> QueueItem | None:
        row = self._db.execute("SELECT * FROM prompts WHERE prompt_id=?", (prompt_id,)).fetchone()
        return self._decode(row) if row is not None else None

    def by_status(self, *statuses: Status) -> list[QueueItem]:
        marks = ",".join("?" * len(statuses))
        rows = self._db.execute(f"SELECT * FROM prompts WHERE status IN ({marks}) ORDER BY number", statuses).fetchall()
        # A row failed while decoding has left the statuses asked for.
        return [item for row in rows if (item := self._decode(row)).status in statuses]

    def pending_ids(self) -> list[str]:
        return [row[0] for row in self._db.execute(
            "SELECT prompt_id FROM prompts WHERE status='pending' ORDER BY number")]

    def count(self, *statuses: Status) -> int:
        marks = ",".join("?" * len(statuses))
        return self._db.execute(f"SELECT COUNT(*) FROM prompts WHERE status IN ({marks})", statuses).fetchone()[0]

    def history(self, *, max_items: int | None = None, offset: int = 0) -> list[QueueItem]:
        """Finished prompts (cancelled ones left out), oldest first (as ComfyUI's dict order), windowed from the newest."""
        limit = -1 if max_items is None else max_items
        rows = self._db.execute(
            "SELECT * FROM prompts WHERE status IN ('success','error','interrupted') "
            "ORDER BY finished DESC, number DESC LIMIT ? OFFSET ?", (limit, max(offset, 0))).fetchall()
        return [self._decode(row) for row in reversed(rows)]

    def _decode(self, row: sqlite3.Row) -> QueueItem:
        """The row's item. A row that cannot be decoded (JSON nested too deeply, written before
        submissions were bounded, or damaged) must not break every read of the queue, nor the
        start of the server: it is failed in place, its contents replaced by the reason."""
        try:
            return _item(row)
        except (ValueError, TypeError, RecursionError) as exc:
            reason = f"stored prompt cannot be decoded ({type(exc).__name__}: {str(exc)[:200]})"
        log.warning("prompt %r: %s; marked as failed", row["prompt_id"], reason)
        failure = RunFailure("internal", "UndecodablePrompt", reason)
        status = row["status"] if row["status"] in FINISHED else "error"
        self._db.execute(
            "UPDATE prompts SET status=?, prompt='{}', extra_data='{}', outputs_to_execute='[]', outputs='{}',"
            " messages='[]', error=?, worker=NULL, finished=COALESCE(finished, ?) WHERE prompt_id=?",
            (status, json.dumps(failure.as_dict()), time.time(), row["prompt_id"]))
        fresh = self._db.execute("SELECT * FROM prompts WHERE prompt_id=?", (row["prompt_id"],)).fetchone()
        return _item(fresh)


def _item(row: sqlite3.Row) -> QueueItem:
    return QueueItem(
        prompt_id=row["prompt_id"], number=row["number"], status=row["status"],
        prompt=json.loads(row["prompt"]), extra_data=json.loads(row["extra_data"]),
        outputs_to_execute=json.loads(row["outputs_to_execute"]), client_id=row["client_id"],
        outputs=json.loads(row["outputs"]), messages=json.loads(row["messages"]),
        error=json.loads(row["error"]) if row["error"] else None, attempts=row["attempts"],
        created=row["created"], started=row["started"], finished=row["finished"],
        worker=json.loads(row["worker"]) if row["worker"] else None)
