"""Completion webhooks (``extra_data.webhook_url``): one POST per finished prompt, bounded by a
timeout. A receiver that is down, slow or answers an error is logged and otherwise ignored: the
prompt's result is already in the history, and nothing here may disturb the server."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

from server.queue.store import QueueItem

log = logging.getLogger(__name__)


def check_url(url: Any) -> str | None:
    """Why ``url`` cannot be a webhook, or None when it can."""
    if not isinstance(url, str):
        return "extra_data.webhook_url must be a string"
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"extra_data.webhook_url is not a URL: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"extra_data.webhook_url must be an http(s) URL with a host, got {url[:200]!r}"
    return None


async def post_completion(url: str, payload: dict[str, Any], *, timeout: float) -> bool:
    """POST ``payload`` as JSON to ``url``; True when the receiver answered 2xx."""
    import httpx  # here, not at the top: ~14 MB the server needs only once a webhook is used

    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            response = await client.post(url, json=payload)
    except Exception as exc:  # noqa: BLE001 - any failure to deliver is the receiver's problem
        log.warning("webhook %s for prompt %s not delivered: %s: %s", url, payload.get("prompt_id"),
                    type(exc).__name__, exc or "timed out")
        return False
    if response.is_success:
        return True
    log.warning("webhook %s for prompt %s answered HTTP %d", url, payload.get("prompt_id"), response.status_code)
    return False


def webhook_payload(item: QueueItem) -> dict[str, Any]:
    """What a completion webhook receives: the outcome up front, the full history entry beside it."""
    entry = item.history_entry()
    return {"prompt_id": item.prompt_id, "status": item.status, "outputs": entry["outputs"],
            "error": item.error, "history": {item.prompt_id: entry}}


class Webhooks:
    """Completion POSTs in flight, so that a stopping server can cancel them."""

    def __init__(self, *, timeout: float) -> None:
        self.timeout = timeout
        self.tasks: set[asyncio.Task[bool]] = set()

    def notify(self, item: QueueItem) -> None:
        """POST ``item``'s outcome to its ``extra_data.webhook_url``, if it has a valid one."""
        url = item.extra_data.get("webhook_url")
        if url is None or check_url(url) is not None:
            return
        task = asyncio.get_running_loop().create_task(post_completion(url, webhook_payload(item), timeout=self.timeout))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def cancel_all(self) -> None:
        for task in list(self.tasks):
            task.cancel()
