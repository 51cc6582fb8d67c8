"""A real ``nodeloom serve`` on a free loopback port and a headless Chromium driving the editor.

The browser is Debian's ``chromium`` package (never a Playwright download); the tests that need
it skip with the reason when it or the ``playwright`` package is missing.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("NODELOOM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_TIMEOUT = 180.0
# Settings of an offline install: the editor's release check calls api.comfy.org otherwise.
OFFLINE_SETTINGS = {"Comfy.Notification.ShowVersionUpdates": False}


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright)"
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set NODELOOM_CHROMIUM)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    base: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    def get_json(self, route: str) -> Any:
        with urllib.request.urlopen(self.url + route, timeout=10) as response:
            return json.loads(response.read())


def _wait_ready(server: RunningServer) -> None:
    """Until the worker has reported its node schemas (SaveImage is listed)."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"nodeloom serve exited with {server.process.returncode}:\n"
                               + server.log.read_text()[-3000:])
        try:
            if "SaveImage" in server.get_json("/api/object_info"):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("nodeloom serve did not list its nodes in time:\n" + server.log.read_text()[-3000:])


@pytest.fixture(scope="module")
def nodeloom_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """``nodeloom serve`` in a subprocess with the built-in node packs and the example plugin."""
    missing = _browser_missing()
    if missing:
        pytest.skip(missing)
    base = tmp_path_factory.mktemp("nodeloom_home")
    (base / "models" / "checkpoints").mkdir(parents=True)
    (base / "models" / "checkpoints" / "tiny-test.safetensors").write_bytes(b"")
    (base / "user" / "default").mkdir(parents=True)
    (base / "user" / "default" / "comfy.settings.json").write_text(json.dumps(OFFLINE_SETTINGS))
    port = _free_port()
    log = base / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "--host", "127.0.0.1", "--port", str(port),
             "--base", str(base), "--plugins", str(REPO / "plugins"), "--log-level", "warning"],
            cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
    server = RunningServer(f"http://127.0.0.1:{port}", base, process, log)
    try:
        _wait_ready(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _browser_missing()
    if missing:
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Recorder:
    """Every request to our server that failed, and every console error, while a page ran."""

    origin: str
    failed: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    expected_404: list[str] = field(default_factory=list)

    def on_response(self, response: Any) -> None:
        if not response.url.startswith(self.origin) or response.status < 400:
            return
        path = response.url[len(self.origin):]
        # The editor probes for optional user files (comfy.templates.json, …) and treats 404
        # as "none yet": that is the true answer for a file nobody wrote.
        if response.status == 404 and response.request.method == "GET" and path.startswith("/api/userdata/"):
            self.expected_404.append(response.url)
            return
        self.failed.append(f"{response.status} {response.request.method} {path}")

    def on_request_failed(self, request: Any) -> None:
        if not request.url.startswith(self.origin):
            return
        response = request.response()
        # Chromium reports a bodiless 200 (POST /settings/…) whose body the page never reads
        # as ERR_ABORTED; the server answered it.
        if response is not None and response.status < 400:
            return
        self.failed.append(f"{request.failure} {request.method} {request.url[len(self.origin):]}")

    def on_console(self, message: Any) -> None:
        if message.type != "error":
            return
        where = (message.location or {}).get("url", "")
        # Resources of other hosts (the editor checks model links on huggingface.co) are
        # refused offline; only what our server serves or answers is under test.
        if where in self.expected_404 or (where.startswith("http") and not where.startswith(self.origin)):
            return
        self.console_errors.append(f"{message.text} (at {where})")


@dataclass
class Editor:
    page: Any
    server: RunningServer
    recorder: Recorder
    shots: Path

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path))
        print(f"screenshot: {path}")
        return path

    def drop_file(self, name: str, data: bytes, mime: str) -> None:
        """Drop a file on the canvas, as a user dragging it from their desktop."""
        self.page.evaluate(
            """({name, b64, mime}) => {
                const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                const transfer = new DataTransfer();
                transfer.items.add(new File([bytes], name, {type: mime}));
                const canvas = document.querySelector('#graph-canvas');
                for (const type of ['dragenter', 'dragover', 'drop'])
                    canvas.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true,
                        dataTransfer: transfer, clientX: 600, clientY: 400}));
            }""", {"name": name, "b64": base64.b64encode(data).decode(), "mime": mime})

    def node_types(self) -> list[str]:
        return list(self.page.evaluate("app.graph.nodes.map(n => n.type)"))


def _close_first_run_dialog(page: Any) -> None:
    """A fresh user folder gets the template gallery on top of the canvas; close it."""
    gallery = page.get_by_role("dialog")
    try:
        gallery.first.wait_for(state="visible", timeout=3_000)
    except Exception:  # noqa: BLE001 - not a first run: nothing to close
        return
    page.keyboard.press("Escape")
    gallery.first.wait_for(state="hidden", timeout=10_000)


@pytest.fixture
def editor(browser: Any, nodeloom_server: RunningServer, tmp_path: Path,
           request: pytest.FixtureRequest) -> Iterator[Editor]:
    """The editor loaded in a fresh browser context, with its first-run dialog closed.
    Screenshots go to the test's tmp folder, or to $NODELOOM_SCREENSHOTS/<test> when set (CI)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    # Nothing leaves the machine: any request to another host is refused at once.
    context.route(re.compile(r"^(?!https?://127\.0\.0\.1[:/]|ws://127\.0\.0\.1[:/])[a-z]+://"),
                  lambda route: route.abort())
    page = context.new_page()
    recorder = Recorder(nodeloom_server.url)
    page.on("response", recorder.on_response)
    page.on("requestfailed", recorder.on_request_failed)
    page.on("console", recorder.on_console)
    page.goto(nodeloom_server.url + "/")
    page.wait_for_function("window.app && window.app.graph && window.LiteGraph"
                           " && 'SaveImage' in LiteGraph.registered_node_types", timeout=90_000)
    page.wait_for_load_state("networkidle")
    _close_first_run_dialog(page)
    shared = os.environ.get("NODELOOM_SCREENSHOTS")
    shots = Path(shared) / request.node.name if shared else tmp_path / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    try:
        yield Editor(page, nodeloom_server, recorder, shots)
    finally:
        context.close()
