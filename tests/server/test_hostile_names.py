"""Hostile names against every route that takes a path: never a 5xx, never a byte read or written
outside the base folder."""

from __future__ import annotations

import http.client
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from PIL import Image

from tests.server.conftest import RunningServer, start_server

SECRET = b"SECRET-7f3a: outside every served folder"

DOT_DOT = ["..", "../secret.txt", "../../outside/secret.txt", "a/../../secret.txt", "./../secret.txt",
           "sub/./../../secret.txt", "....//secret.txt", ".../secret.txt", "..;/secret.txt",
           "%2e%2e/secret.txt", "%2e%2e%2fsecret.txt", "..%2fsecret.txt", "..%5csecret.txt",
           "%252e%252e%252fsecret.txt", "..%252fsecret.txt", "%c0%ae%c0%ae/secret.txt", "..%c0%afsecret.txt",
           "\uff0e\uff0e/secret.txt", "..\\secret.txt", "..\\..\\outside\\secret.txt",
           "%2e%2e%5c%2e%2e%5csecret.txt", "..\u2215secret.txt"]
ABSOLUTE = ["/etc/passwd", "//etc/passwd", "file:///etc/passwd", "~/secret.txt", "{outside}/secret.txt"]
WINDOWS = ["C:\\Windows\\win.ini", "C:/Windows/win.ini", "c:secret.txt", "\\\\server\\share\\secret.txt",
           "//server/share/secret.txt", "\\\\?\\C:\\secret.txt", "CON", "NUL.png", "secret.txt::$DATA"]
NUL = ["secret.txt\x00.png", "\x00", "%00", "a%00b.png", "..%00/secret.txt"]
OVERLONG = ["a" * 256, "a" * 300 + ".png", "\u00e9" * 128 + ".png", "/".join(["d" * 200] * 25)]
LINKS = ["link_out.txt", "link_out.png", "dir_out/secret.txt", "dir_out", "link_in.png", "loop", "loop/x.png"]
ODD = ["", ".", " ", "\r\nX-Injected: 1", "a\"b.png", "\ud800.png"]
NAMES = DOT_DOT + ABSOLUTE + WINDOWS + NUL + OVERLONG + LINKS + ODD


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    """A server whose base sits beside an ``outside`` folder holding the secrets, with links out
    of, within, and looping in, every served folder."""
    root = tmp_path_factory.mktemp("hostile")
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    secret_png = io.BytesIO()
    Image.new("RGB", (7, 3), (1, 2, 3)).save(secret_png, format="PNG", pnginfo=_text_chunk())
    (outside / "secret.png").write_bytes(secret_png.getvalue())
    (root / "secret.txt").write_bytes(SECRET)
    base = root / "base"
    for folder in ("input", "output", "temp", "user/default"):
        served = base / folder
        served.mkdir(parents=True)
        Image.new("RGB", (2, 2)).save(served / "real.png")
        (served / "link_out.txt").symlink_to(outside / "secret.txt")
        (served / "link_out.png").symlink_to(outside / "secret.png")
        (served / "dir_out").symlink_to(outside)
        (served / "link_in.png").symlink_to(served / "real.png")
        (served / "loop").symlink_to(served / "loop")
    server = start_server(base)
    yield server, root
    server.stop()


def _text_chunk():
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("secret", SECRET.decode())
    return info


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file outside the base folder (links not followed): size and modification time."""
    found = {}
    for current, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if Path(current, d) != root / "base"]
        for name in names:
            stat = os.lstat(Path(current, name))
            found[str(Path(current, name))] = (stat.st_size, stat.st_mtime_ns)
    return found


def _raw(server: RunningServer, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
    """A request sent with its target exactly as given (httpx would normalise dot segments)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, target, body=body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _segment(name: str, *, encode_slash: bool) -> str:
    return quote(name, safe="%" if encode_slash else "/%", errors="surrogatepass")


def _requests(server: RunningServer, client: httpx.Client, name: str) -> Iterator[tuple[str, int, bytes]]:
    """Every route that takes a path, with ``name`` in each place it goes; (what, status, body)."""
    url = server.url
    picture = io.BytesIO()
    Image.new("RGB", (2, 2)).save(picture, format="PNG")
    query_name = name.encode("utf-8", "surrogatepass").decode("utf-8", "replace")

    def get(route: str, **params: str) -> httpx.Response:
        return client.get(f"{url}{route}", params=params)

    for kind in ("input", "output", "temp"):
        for params in ({"filename": query_name, "type": kind}, {"filename": "real.png", "subfolder": query_name,
                                                                "type": kind},
                       {"filename": query_name, "type": kind, "preview": "webp"},
                       {"filename": query_name, "type": kind, "channel": "a"}):
            response = get("/view", **params)
            yield f"GET /view {params}", response.status_code, response.content
    response = get("/api/view", filename=query_name)
    yield "GET /api/view", response.status_code, response.content
    for data in ({}, {"subfolder": query_name}):
        response = client.post(f"{url}/upload/image", files={"image": (query_name or "x.png", picture.getvalue(),
                                                                       "image/png")}, data=data)
        yield f"POST /upload/image {data}", response.status_code, response.content
    for ref in ({"filename": query_name}, {"filename": "real.png", "subfolder": query_name},
                {"filename": query_name, "type": "output"}):
        response = client.post(f"{url}/upload/mask", files={"image": ("mask.png", picture.getvalue(), "image/png")},
                              data={"original_ref": json.dumps(ref), "subfolder": query_name})
        yield f"POST /upload/mask {ref}", response.status_code, response.content
    for encode_slash in (True, False):
        segment = _segment(name, encode_slash=encode_slash)
        for prefix in ("", "/api"):
            for method in ("GET", "POST", "DELETE"):
                status, body = _raw(server, method, f"{prefix}/userdata/{segment}", b'{"x": 1}')
                yield f"{method} {prefix}/userdata/{segment}", status, body
        for target in (f"/userdata/{segment}/move/moved.json", f"/userdata/real.png/move/{segment}"):
            status, body = _raw(server, "POST", target)
            yield f"POST {target}", status, body
        status, body = _raw(server, "GET", f"/assets/{segment}")
        yield f"GET /assets/{segment}", status, body
        status, body = _raw(server, "GET", f"/settings/{segment}")
        yield f"GET /settings/{segment}", status, body
    for route, params in (("/userdata", {"dir": query_name}),
                          ("/userdata", {"dir": query_name, "recurse": "true", "full_info": "true"}),
                          ("/v2/userdata", {"path": query_name})):
        response = get(route, **params)
        yield f"GET {route} {params}", response.status_code, response.content
    for kind in ("input", "output", "temp"):
        response = get(f"/internal/files/{kind}")
        yield f"GET /internal/files/{kind}", response.status_code, response.content


def _leaks(body: bytes) -> bool:
    """Whether a response carries the secret file's bytes, or the secret image re-encoded."""
    if SECRET in body or b"root:x:0:0" in body:
        return True
    try:
        with Image.open(io.BytesIO(body)) as image:
            return image.size == (7, 3)
    except Exception:  # noqa: BLE001 - not an image at all
        return False


def test_hostile_names_over_every_path_route(layout):
    server, root = layout
    names = [n.replace("{outside}", str(root / "outside")) for n in NAMES]
    assert len(names) >= 40
    before = _snapshot(root)
    with httpx.Client(timeout=30) as client:
        results = [(name, *result) for name in names for result in _requests(server, client, name)]
    failures = [f"{name!r}: {what} -> {status} {body[:120]!r}" for name, what, status, body in results
                if status >= 500 or _leaks(body)]
    assert not failures, f"{len(failures)} of {len(results)} requests:\n" + "\n".join(failures[:40])
    assert len(results) > 40 * 30
    assert _snapshot(root) == before, "something outside the base folder was written"
    assert server.process.poll() is None
