"""The Host/Origin check of a token-less loopback server (DNS rebinding, cross-site pages)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import websockets
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from websockets.exceptions import InvalidStatus

from server.http.security import SecurityMiddleware
from server.settings import ServerSettings

PORT = 8188

# (Host, Origin or None, expected status) for a token-less server bound to 127.0.0.1:8188.
CASES = [
    # this machine's names for this server: answered, with or without a same-server Origin
    ("127.0.0.1:8188", None, 200),
    ("localhost:8188", None, 200),
    ("LOCALHOST:8188", None, 200),
    ("[::1]:8188", None, 200),
    ("127.0.0.1:8188", "http://127.0.0.1:8188", 200),
    ("localhost:8188", "http://localhost:8188", 200),
    ("127.0.0.1:8188", "http://localhost:8188", 200),
    ("[::1]:8188", "http://[::1]:8188", 200),
    # the bypasses the issue found: other spellings of loopback and rebinding names
    ("0.0.0.0:8188", "http://evil.example", 403),
    ("0.0.0.0:8188", None, 403),
    ("127.1:8188", "http://evil.example", 403),
    ("127.1:8188", None, 403),
    ("[::ffff:127.0.0.1]:8188", "http://evil.example", 403),
    ("localhost.:8188", "http://evil.example", 403),
    ("localhost.:8188", None, 403),
    ("evil.example:8188", "http://evil.example:8188", 403),
    ("evil.example:8188", None, 403),
    ("127.0.0.1.nip.io:8188", "http://127.0.0.1.nip.io:8188", 403),
    ("2130706433:8188", None, 403),
    ("0x7f000001:8188", None, 403),
    ("127.0.0.2:8188", None, 403),
    # the right name with the wrong port, or none (the browser would send :80 then)
    ("127.0.0.1:9999", None, 403),
    ("127.0.0.1", None, 403),
    ("", None, 403),
    # the right Host with a cross-site Origin: a web page
    ("127.0.0.1:8188", "http://evil.example", 403),
    ("127.0.0.1:8188", "null", 403),
    ("127.0.0.1:8188", "http://127.0.0.1:9999", 403),
    ("127.0.0.1:8188", "http://127.0.0.1:8188.evil.example", 403),
    ("127.0.0.1:8188", "http://user@127.0.0.1:8188", 403),
    ("127.0.0.1:8188", "file://", 403),
    ("localhost:8188", "http://localhost.:8188", 403),
    # an origin the operator allowed (--allow-origin)
    ("127.0.0.1:8188", "http://editor.example", 200),
]


def _client(**settings: object) -> TestClient:
    async def ok(request: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = SecurityMiddleware(Starlette(routes=[Route("/prompt", ok, methods=["GET", "POST"])]),
                             settings=ServerSettings(port=PORT, allow_origins=["http://editor.example"], **settings))
    return TestClient(app)


@pytest.mark.parametrize(("host", "origin", "status"), CASES)
def test_host_and_origin_table(host: str, origin: str | None, status: int) -> None:
    assert len(CASES) >= 20
    headers = {"Host": host, **({"Origin": origin} if origin is not None else {})}
    response = _client().post("/prompt", headers=headers)
    assert response.status_code == status, (host, origin, response.text)
    if status == 403:
        assert "error" in response.json() and ("Host" in response.text or "cross-origin" in response.text)


def test_token_server_relies_on_the_token_not_the_host() -> None:
    client = _client(token="s3cret")
    assert client.get("/prompt", headers={"Host": "127.1:8188"}).status_code == 401
    assert client.get("/prompt", headers={"Host": "127.1:8188", "Authorization": "Bearer s3cret"}).status_code == 200


def test_exposed_server_with_token_answers_any_host() -> None:
    client = _client(host="0.0.0.0", token="s3cret")
    assert client.get("/prompt", headers={"Host": "gpu-box.lan:8188", "X-NodeLoom-Token": "s3cret"}).status_code == 200


def test_real_server_refuses_rebinding_hosts_over_http_and_websocket(server) -> None:
    url = f"{server.url}/prompt"
    body = {"prompt": {}}
    for host in ("0.0.0.0", "127.1", "[::ffff:127.0.0.1]", "localhost.", "rebind.evil.example"):
        response = httpx.post(url, json=body, headers={"Host": f"{host}:{server.port}", "Origin": "http://evil.example"})
        assert response.status_code == 403, host
    assert httpx.get(f"{server.url}/queue", headers={"Host": f"localhost:{server.port}"}).status_code == 200

    async def handshake() -> None:
        with pytest.raises(InvalidStatus):
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws",
                                          additional_headers={"Host": f"127.1:{server.port}"}):
                pass
    asyncio.run(handshake())
