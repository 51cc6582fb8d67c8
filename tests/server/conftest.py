"""A real server in a subprocess on a free loopback port, with the torch-free test nodes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGINS = Path(__file__).parent / "plugins"


T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 60.0) -> T:
    """``predicate()``'s first truthy value, polled every 0.1 s; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def state_of(http: Any, prompt_id: str) -> str:
    """A prompt's state (pending, running, success, error, interrupted) from GET /jobs/{id}:
    /history answers only once it has finished."""
    return http.job(prompt_id)["execution_status"]["state"]


def serve_args(argv: list[str], plugin_dirs: list[Path] = ()) -> Any:
    """``nodeloom serve ARGV`` parsed as the command parses it: the server plugin plus the plugin
    folders given (their options join serve's)."""
    from graph_runtime.cli import build_parser
    from graph_runtime.registry import load_plugins

    registry = load_plugins(plugin_dirs=list(plugin_dirs), builtins=("server.plugin",), entry_points=False)
    return build_parser(registry).parse_args(["serve", *argv])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    base: Path
    port: int
    process: subprocess.Popen[bytes]
    token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_server(base: Path, *extra: str, token: str | None = None, port: int | None = None,
                 wait_ready: bool = True) -> RunningServer:
    port = port or free_port()
    args = [sys.executable, "-m", "server.cli", "--port", str(port), "--base", str(base),
            "--plugins", str(PLUGINS), "--node-packs", "", "--log-level", "warning", *extra]
    if token:
        args += ["--token", token]
    log = open(base / f"server-{port}.log", "ab")
    process = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    server = RunningServer(base, port, process, token)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {(base / f'server-{port}.log').read_text()[-3000:]}")
        try:
            stats = httpx.get(f"{server.url}/system_stats", headers=headers, timeout=2).json()
            if not wait_ready or all(w["state"] == "ready" for w in stats["nodeloom"]["workers"]):
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError("server did not become ready in 60 s")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("server"))
    yield running
    running.stop()


def color_prompt(red: int = 0, green: int = 0, blue: int = 0, size: int = 8) -> dict:
    return {"1": {"class_type": "TestColor", "inputs": {"red": red, "green": green, "blue": blue}},
            "2": {"class_type": "TestSave", "inputs": {"color": ["1", 0], "filename_prefix": "t", "size": size}}}


def slow_prompt(steps: int = 3, delay: float = 0.05, previews: bool = True) -> dict:
    return {"1": {"class_type": "TestSlow", "inputs": {"steps": steps, "delay": delay, "previews": previews}}}
