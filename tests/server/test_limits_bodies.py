"""Request bodies are bounded while they stream in: chunked bodies (no Content-Length) past a
route's limit get 413 as soon as the limit is passed, the server stops reading by itself, and its
memory does not grow with the body."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.server.conftest import RunningServer, start_server

KIB = 1024
MIB = 1024 * KIB
# What a client would send if nobody stopped it: far more than any limit below.
ATTEMPT = 50 * MIB
CHUNK = 64 * KIB


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("limits"), "--max-body-kb", "64", "--max-prompt-mb", "1",
                           "--max-userdata-mb", "2", "--max-upload-mb", "1")
    yield running
    running.stop()


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * KIB


def send_chunked(server: RunningServer, path: str, *, content_type: str = "application/json",
                 head: bytes = b"", total: int = ATTEMPT) -> tuple[int, bytes, int]:
    """POST ``head`` then filler as a chunked body of up to ``total`` bytes, until the server
    answers or closes. Returns (status, response bytes, bytes sent)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: {content_type}\r\n"
                 f"Transfer-Encoding: chunked\r\n\r\n".encode())
    sent, answer = 0, b""
    piece = head + b"x" * (CHUNK - len(head))
    try:
        while sent < total:
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
            piece = b"[" * CHUNK if content_type == "application/json" else b"x" * CHUNK
            sock.setblocking(False)
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                pass
            sock.setblocking(True)
            if answer:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    sock.settimeout(30)
    try:
        while not answer.count(b"\r\n\r\n") or b"}" not in answer:
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    except (ConnectionResetError, TimeoutError):
        pass
    sock.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1") else 0
    return status, answer, sent


@pytest.mark.parametrize("path, limit", [
    ("/settings", 64 * KIB), ("/api/settings/Comfy.Something", 64 * KIB), ("/queue", 64 * KIB),
    ("/prompt", MIB), ("/api/prompt", MIB), ("/userdata/workflows%2Fbig.json", 2 * MIB),
])
def test_a_chunked_body_past_the_limit_is_refused_while_streaming(limited: RunningServer, path: str,
                                                                  limit: int) -> None:
    before = _rss(limited.process.pid)
    status, answer, sent = send_chunked(limited, path, head=b'{"prompt": ')
    assert status == 413, answer[:500]
    assert b'"too_large"' in answer and str(limit).encode() in answer
    # Stopped by itself long before the 50 MB were sent (socket buffers hold a few MB at most).
    assert sent < 24 * MIB, sent
    assert _rss(limited.process.pid) - before < 16 * MIB
    assert httpx.get(f"{limited.url}/system_stats", timeout=10).status_code == 200
    assert not (limited.base / "user" / "default" / "workflows" / "big.json").exists()


def test_a_chunked_upload_past_the_limit_is_refused(limited: RunningServer) -> None:
    boundary = "xyzzy"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode()
    status, answer, sent = send_chunked(limited, "/upload/image", head=head,
                                        content_type=f"multipart/form-data; boundary={boundary}")
    assert status == 413, answer[:500]
    assert sent < 24 * MIB


def test_a_declared_length_past_the_limit_is_refused_before_reading(limited: RunningServer) -> None:
    sock = socket.create_connection(("127.0.0.1", limited.port), timeout=10)
    sock.sendall(f"POST /settings HTTP/1.1\r\nHost: 127.0.0.1:{limited.port}\r\n"
                 f"Content-Length: {200 * MIB}\r\n\r\n{{".encode())
    started = time.monotonic()
    answer = sock.recv(65536)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413") and time.monotonic() - started < 5


def test_bodies_within_the_limits_still_work(limited: RunningServer) -> None:
    value = "v" * (40 * KIB)
    assert httpx.post(f"{limited.url}/settings", json={"Comfy.Big": value}, timeout=10).status_code == 200
    assert httpx.get(f"{limited.url}/settings/Comfy.Big", timeout=10).json() == value

    def chunks() -> Iterator[bytes]:  # chunked, within the limit
        yield b'{"Comfy.Chunked": "'
        yield b"c" * (30 * KIB)
        yield b'"}'

    assert httpx.post(f"{limited.url}/settings", content=chunks(), timeout=10).status_code == 200
    workflow = b"{" + b'"k": "' + b"w" * (1 * MIB) + b'"}'
    answer = httpx.post(f"{limited.url}/userdata/workflows%2Fok.json", content=workflow, timeout=10)
    assert answer.status_code == 200, answer.text
