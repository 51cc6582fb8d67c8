"""What the scheduler keeps per unfinished prompt, in one record created when the prompt is queued
and dropped when it finishes, so nothing of a prompt outlives it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from server.queue.store import QueueItem
from server.wire.protocol import PromptTranslator


@dataclass(eq=False)
class PromptRecord:
    """``number``: the queue position; ``client_id``: the websocket client its messages go to
    (None: every client); ``messages``: the ``[type, data]`` pairs its history entry keeps;
    ``waiters``: callers blocked until it finishes (POST /prompt?wait)."""

    prompt_id: str
    number: float
    client_id: str | None
    translator: PromptTranslator
    messages: list[list[Any]] = field(default_factory=list)
    waiters: list[asyncio.Future[QueueItem]] = field(default_factory=list)

    @classmethod
    def of(cls, item: QueueItem) -> PromptRecord:
        return cls(item.prompt_id, item.number, item.client_id, PromptTranslator(item.prompt_id))

    def restart(self) -> None:
        """Forget what a run that never got going reported (it is queued again)."""
        self.translator = PromptTranslator(self.prompt_id)
        self.messages = []

    def resolve(self, item: QueueItem) -> None:
        """Answer every waiter with the finished ``item``."""
        for future in self.waiters:
            if not future.done():
                future.set_result(item)
        self.waiters.clear()
