"""Completion webhooks: delivered to a receiver on loopback with the outcome; undeliverable ones
(nobody listening, an error answer, a receiver that never answers) are logged and harm nothing."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from server.client import Client
from tests.server.conftest import RunningServer, color_prompt, free_port, start_server

WEBHOOK_TIMEOUT = 1.0


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST. ``/fail`` answers 500; ``/hang``
    answers only after 3 s (longer than the server's webhook timeout). It shuts itself down after
    ``lifetime`` seconds even if a test forgets to."""

    def __init__(self, lifetime: float = 60.0) -> None:
        self.received: queue.Queue[tuple[str, Any]] = queue.Queue()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.put((self.path, json.loads(body)))
                if self.path == "/hang":
                    time.sleep(3)
                status = 500 if self.path == "/fail" else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self._stopper = threading.Timer(lifetime, self.http.shutdown)
        self._stopper.start()

    def next(self, timeout: float = 30.0) -> tuple[str, Any]:
        return self.received.get(timeout=timeout)

    def close(self) -> None:
        self._stopper.cancel()
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture(scope="module")
def hook_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("webhook"), "--webhook-timeout", str(WEBHOOK_TIMEOUT))
    yield running
    running.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def _log(server: RunningServer) -> str:
    return next(server.base.glob("server-*.log")).read_text()


def test_webhook_receives_the_outcome(hook_server: RunningServer, receiver: Receiver) -> None:
    with Client(hook_server.url) as http:
        done = http.submit(color_prompt(red=40), extra_data={"webhook_url": f"{receiver.url}/done?k=1"})
        path, payload = receiver.next()
        assert path == "/done?k=1"
        assert payload["prompt_id"] == done["prompt_id"] and payload["status"] == "success"
        image = payload["outputs"]["2"]["images"][0]
        assert image["type"] == "output" and image["filename"].endswith(".png")
        entry = payload["history"][done["prompt_id"]]
        assert entry["status"]["status_str"] == "success" and entry["outputs"] == payload["outputs"]
        assert payload["error"] is None
        failed = http.submit({"1": {"class_type": "TestFail", "inputs": {"message": "hook me"}}},
                             extra_data={"webhook_url": f"{receiver.url}/failed"})
        path, payload = receiver.next()
        assert path == "/failed" and payload["prompt_id"] == failed["prompt_id"]
        assert payload["status"] == "error" and payload["error"]["exception_message"] == "hook me"
        assert payload["error"]["node_id"] == "1"


def test_undeliverable_webhooks_are_logged_and_harmless(hook_server: RunningServer, receiver: Receiver) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/gone"
    with Client(hook_server.url) as http:
        for url in (nobody, f"{receiver.url}/fail", f"{receiver.url}/hang"):
            began = time.monotonic()
            answer = http.submit(color_prompt(green=len(url) % 256), extra_data={"webhook_url": url}, wait=True)
            assert answer["status"] == "success"
            # The blocking answer does not wait for the webhook.
            assert time.monotonic() - began < WEBHOOK_TIMEOUT + 2
        assert receiver.next()[0] == "/fail" and receiver.next()[0] == "/hang"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "ReadTimeout" not in _log(hook_server):
            time.sleep(0.1)
        log = _log(hook_server)
        assert f"webhook {nobody} for prompt" in log and "ConnectError" in log
        assert "answered HTTP 500" in log and "ReadTimeout" in log
        assert "Traceback" not in log
        assert http.submit(color_prompt(blue=77), wait=True)["status"] == "success"


def test_bad_webhook_urls_are_refused_on_submission(hook_server: RunningServer) -> None:
    for url in ("ftp://127.0.0.1/x", "not a url", 12, "http://"):
        response = httpx.post(f"{hook_server.url}/prompt",
                              json={"prompt": color_prompt(), "extra_data": {"webhook_url": url}})
        assert response.status_code == 400, url
        assert "webhook_url" in response.json()["error"]["message"]
