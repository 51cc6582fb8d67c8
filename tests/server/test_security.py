"""Token, origin check, hostile file names, upload limits and verification."""

from __future__ import annotations

import asyncio
import io

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus
from PIL import Image

from server.settings import ServerSettings
from tests.server.conftest import start_server

HOSTILE_NAMES = ["../secret.png", "..", "/etc/passwd", "a/../../b.png", "..\\win.png", "x\x00.png",
                 "%2e%2e%2fsecret.png", "..%2fsecret.png", "C:\\x.png", "sub/../../x.png", ""]


def _png(size=(4, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_hostile_names_never_leave_their_folder(server):
    (server.base / "secret.png").write_bytes(_png())
    link = server.base / "output" / "link.png"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(server.base / "secret.png")
    for name in HOSTILE_NAMES + ["link.png"]:
        response = httpx.get(f"{server.url}/view", params={"filename": name, "type": "output"})
        assert response.status_code in (400, 404), name
        response = httpx.get(f"{server.url}/view", params={"filename": "secret.png", "subfolder": name or "..",
                                                            "type": "output"})
        assert response.status_code in (400, 404), name
        upload = httpx.post(f"{server.url}/upload/image", files={"image": (name, _png(), "image/png")})
        # Refused, or (where the multipart parser already cut the path off) stored inside input/.
        assert upload.status_code in (400, 422) or (
            "/" not in upload.json()["name"] and (server.base / "input" / upload.json()["name"]).is_file()), name
        upload = httpx.post(f"{server.url}/upload/image", files={"image": ("ok.png", _png(), "image/png")},
                            data={"subfolder": name or "../.."})
        assert upload.status_code in (200, 400), name
        if upload.status_code == 200:
            assert upload.json()["subfolder"] == name.strip("/")
    assert httpx.get(f"{server.url}/view", params={"filename": "x.png", "type": "elsewhere"}).status_code == 400
    assert not (server.base / "secret (1).png").exists()


def test_uploads_are_verified_and_renamed(server):
    first = httpx.post(f"{server.url}/upload/image", files={"image": ("pic.png", _png(), "image/png")}).json()
    again = httpx.post(f"{server.url}/upload/image", files={"image": ("pic.png", _png(), "image/png")}).json()
    other = httpx.post(f"{server.url}/upload/image", files={"image": ("pic.png", _png((5, 5)), "image/png")}).json()
    # The same bytes again reuse the file (as ComfyUI); other bytes never overwrite it.
    assert first == again == {"name": "pic.png", "subfolder": "", "type": "input"} and other["name"] == "pic (1).png"
    fake = httpx.post(f"{server.url}/upload/image", files={"image": ("fake.png", b"<?php evil() ?>", "image/png")})
    assert fake.status_code == 400 and "image" in fake.json()["error"]["message"]
    assert not (server.base / "input" / "fake.png").exists()
    mask = io.BytesIO()
    Image.new("RGBA", (2, 2), (0, 0, 0, 128)).save(mask, format="PNG")
    masked = httpx.post(f"{server.url}/upload/mask", files={"image": ("pic.png", mask.getvalue(), "image/png")},
                        data={"original_ref": '{"filename": "pic.png"}', "overwrite": "true"})
    assert masked.status_code == 200
    stored = Image.open(server.base / "input" / "pic.png")
    assert stored.mode == "RGBA" and stored.size == (4, 4) and stored.getpixel((0, 0))[3] == 128


def test_cross_site_origin_refused_on_loopback(server):
    assert httpx.get(f"{server.url}/queue", headers={"Origin": "http://evil.example"}).status_code == 403
    assert httpx.get(f"{server.url}/queue", headers={"Origin": server.url}).status_code == 200

    async def handshake():
        with pytest.raises(InvalidStatus):
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws", origin="http://evil.example"):
                pass
    asyncio.run(handshake())


def test_exposed_bind_requires_token():
    with pytest.raises(ValueError, match="--token"):
        ServerSettings(host="0.0.0.0").check_exposure()


def test_token_required_everywhere(tmp_path):
    server = start_server(tmp_path, "--max-upload-mb", "0.01", token="s3cret")
    try:
        assert httpx.get(f"{server.url}/queue").status_code == 401
        assert httpx.get(f"{server.url}/queue", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{server.url}/queue", params={"token": "s3cret"}).status_code == 401  # query only for /ws, /view
        assert httpx.get(f"{server.url}/queue", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(f"{server.url}/view", params={"filename": "none.png", "token": "s3cret"}).status_code == 404

        async def handshakes():
            with pytest.raises(InvalidStatus) as refused:
                async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws?clientId=a"):
                    pass
            assert refused.value.response.status_code == 401
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws?clientId=a&token=s3cret") as ws:
                assert '"status"' in await ws.recv()
        asyncio.run(handshakes())
        big = httpx.post(f"{server.url}/upload/image", headers={"Authorization": "Bearer s3cret"},
                         files={"image": ("big.png", _png((400, 400)) + b"\0" * 2_000_000, "image/png")})
        assert big.status_code == 413
    finally:
        server.stop()
