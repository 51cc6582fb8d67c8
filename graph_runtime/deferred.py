"""Output files written off the run's thread, so the next node (or the next prompt) runs meanwhile.

A node that writes files (SaveImage, PreviewImage) asks its context for the ``BackgroundWrites``
service (``ctx.services.get(BACKGROUND_WRITES)``). Where the runtime's owner installed one, the
node prepares what only it can (the file name, the pixels) and submits the encode and write; where
none is installed (``nodeloom run``, ``batch``, a test's Runtime), it writes in place as before.

Whoever installs the service learns of every write through ``on_submit`` and must hold back what
it reports about that node and its prompt (ComfyUI's ``executed``, the prompt's end) until the
write is done: a server worker's outbox does (``server.execution.outbox``). PNG encoding (zlib)
and file writes release the GIL, so one write thread uses a second core.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from graph_runtime.context import Context

# The Services key nodes look the writer up under.
BACKGROUND_WRITES = "background_writes"
# A file being written is named <name>.partial until complete; it holds its counter meanwhile.
PARTIAL_SUFFIX = ".partial"


def remove_partial_files(folder: Path) -> int:
    """Delete the ``.partial`` files under ``folder``, left by a writer killed mid-write (they are
    never completed); only for a folder no writer uses now. Returns how many."""
    removed = 0
    for path in folder.rglob("*" + PARTIAL_SUFFIX) if folder.is_dir() else ():
        try:
            path.unlink()
            removed += 1
        except OSError:
            continue
    return removed


@dataclass(frozen=True)
class PendingWrite:
    """One submitted write: the node that submitted it and the future of its completion (its
    result is None; its exception is why the file could not be written)."""

    prompt_id: str
    node_id: str
    class_type: str
    future: Future[None]


class BackgroundWrites:
    """``threads`` write threads; at most ``max_pending`` writes submitted and not finished (a
    node submitting more waits: the images waiting to be written are held in memory).
    ``on_submit`` is called on the submitting thread, before ``submit`` returns."""

    def __init__(self, *, threads: int, on_submit: Callable[[PendingWrite], None], max_pending: int = 8) -> None:
        assert threads > 0 and max_pending > 0, "threads and max_pending must be positive"
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="write")
        self._slots = threading.BoundedSemaphore(max_pending)
        self._on_submit = on_submit

    def submit(self, ctx: Context, write: Callable[[], None]) -> PendingWrite:
        """Run ``write()`` (which must touch nothing the run may change afterwards) on a write
        thread, on behalf of ``ctx``'s node."""
        self._slots.acquire()
        try:
            future = self._pool.submit(write)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        pending = PendingWrite(ctx.prompt_id, ctx.node_id, ctx.class_type, future)
        self._on_submit(pending)
        return pending

    def close(self) -> None:
        """Finish every submitted write, then stop the threads."""
        self._pool.shutdown(wait=True)
