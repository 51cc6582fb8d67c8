"""Files served and stored by the server: image-only uploads, /view's headers, decompression bombs,
names the OS cannot look up, non-UTF-8 names, racing reads and deletes, the OpenAPI document."""

from __future__ import annotations

import argparse
import io
import re
import struct
import threading
import time
import zlib
from urllib.parse import quote

import httpx
import pytest
from PIL import Image

from server.cli import add_serve_arguments, settings_from
from server.http.files import FileRequestError, content_disposition, store_upload
from server.settings import DEFAULT_MAX_IMAGE_PIXELS
from graph_runtime.folders import FolderPaths


def png(size: tuple[int, int] = (4, 4), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` and that holds no pixel data at all."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IEND", b"")


def png_bomb(width: int = 13000, height: int = 13000) -> bytes:
    """A valid all-black greyscale PNG of ``width`` x ``height`` that compresses to well under a MB."""
    chunk = _chunk
    packer = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then the row's pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def upload(server, name: str, data: bytes, **form: str) -> httpx.Response:
    return httpx.post(f"{server.url}/upload/image", files={"image": (name, data, "image/png")}, data=form, timeout=30)


# -- item 2: stored HTML served as a page ---------------------------------------------------------

def test_png_with_script_uploaded_as_html_is_refused(server):
    polyglot = png() + b"<script>alert(document.domain)</script>"
    refused = upload(server, "page.html", polyglot)
    assert refused.status_code == 400 and "only images" in refused.json()["error"]["message"]
    assert not (server.base / "input" / "page.html").exists()
    for name in ("page.svg", "page.htm", "page.js", "page", "page.png.html"):
        assert upload(server, name, polyglot).status_code == 400, name


def test_decoded_format_decides_the_stored_extension(server):
    jpeg = io.BytesIO()
    Image.new("RGB", (4, 4)).save(jpeg, format="JPEG")
    stored = upload(server, "photo.png", jpeg.getvalue())
    assert stored.status_code == 200 and stored.json()["name"] == "photo.jpg"
    assert (server.base / "input" / "photo.jpg").is_file() and not (server.base / "input" / "photo.png").exists()
    assert upload(server, "photo.jpeg", jpeg.getvalue()).json()["name"] == "photo.jpeg"
    assert upload(server, "still.webp", png()).json()["name"] == "still.png"


def test_view_serves_images_inline_and_everything_else_as_attachment(server):
    output = server.base / "output"
    output.mkdir(parents=True, exist_ok=True)
    (output / "page.html").write_text("<script>alert(1)</script>")
    (output / "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    (output / "pic.png").write_bytes(png())
    page = httpx.get(f"{server.url}/view", params={"filename": "page.html"})
    assert page.status_code == 200 and page.headers["content-type"] == "application/octet-stream"
    assert page.headers["content-disposition"].startswith("attachment;")
    assert page.headers["x-content-type-options"] == "nosniff"
    drawing = httpx.get(f"{server.url}/view", params={"filename": "drawing.svg"})
    assert drawing.headers["content-disposition"].startswith("attachment;")
    assert "svg" not in drawing.headers["content-type"]
    picture = httpx.get(f"{server.url}/view", params={"filename": "pic.png"})
    assert picture.headers["content-type"] == "image/png" and picture.headers["x-content-type-options"] == "nosniff"
    assert picture.headers["content-disposition"] == 'inline; filename="pic.png"'
    missing = httpx.get(f"{server.url}/view", params={"filename": "nope.png"})
    assert missing.status_code == 404 and missing.headers["x-content-type-options"] == "nosniff"


# -- item 4: decompression bombs ------------------------------------------------------------------

def test_default_pixel_limit_is_8192_squared_or_pillows():
    assert DEFAULT_MAX_IMAGE_PIXELS == min(8192 * 8192, Image.MAX_IMAGE_PIXELS)


def test_13000_square_png_bomb_refused_on_upload_and_preview(server):
    bomb = png_bomb()
    assert len(bomb) < 1024 * 1024
    started = time.monotonic()
    refused = upload(server, "bomb.png", bomb)
    assert refused.status_code == 400 and "13000x13000" in refused.json()["error"]["message"]
    assert "--max-image-pixels" in refused.json()["error"]["message"]
    assert time.monotonic() - started < 5
    assert not (server.base / "input" / "bomb.png").exists()
    (server.base / "output").mkdir(parents=True, exist_ok=True)
    (server.base / "output" / "bomb.png").write_bytes(bomb)
    for params in ({"preview": "webp;50"}, {"channel": "rgb"}, {"channel": "a"}):
        preview = httpx.get(f"{server.url}/view", params={"filename": "bomb.png", **params}, timeout=30)
        assert preview.status_code == 400 and "exceeds the limit" in preview.json()["error"]["message"], params
    masked = httpx.post(f"{server.url}/upload/mask", files={"image": ("m.png", bomb, "image/png")},
                        data={"original_ref": '{"filename": "x.png"}'}, timeout=30)
    assert masked.status_code in (400, 404)


def test_pixel_limit_is_checked_from_the_header_before_decoding(tmp_path):
    # No pixel data to decode: refused from the header alone, by our limit, or by Pillow's own
    # (twice its MAX_IMAGE_PIXELS) which Image.open applies first.
    with pytest.raises(FileRequestError, match="20000x5000 pixels exceeds the limit"):
        store_upload(FolderPaths(base=tmp_path), png_header_only(20000, 5000), filename="x.png", max_bytes=10**6)
    with pytest.raises(FileRequestError, match="decompression bomb"):
        store_upload(FolderPaths(base=tmp_path), png_header_only(60000, 60000), filename="x.png", max_bytes=10**6)
    with pytest.raises(FileRequestError, match="16x16 pixels exceeds the limit of 100"):
        store_upload(FolderPaths(base=tmp_path), png((16, 16)), filename="x.png", max_bytes=10**6, max_pixels=100)
    assert store_upload(FolderPaths(base=tmp_path), png((8, 8)), filename="x.png", max_bytes=10**6,
                        max_pixels=100).name == "x.png"


def test_max_image_pixels_flag_reaches_the_settings_and_the_workers():
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--max-image-pixels", "1000", "--node-packs", ""])
    settings = settings_from(args, {"ram_budget": 1})
    assert settings.max_image_pixels == 1000
    assert settings.model_settings == {"ram_budget": 1, "max_image_pixels": 1000}
    assert settings_from(parser.parse_args([]), {}).max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS


# -- item 5: non-Latin-1 names --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["猫_00001_.png", "🎨 sunset_00001_.png", 'quote"d.png', "Ünïcode.png"])
def test_view_of_non_latin1_names_uses_rfc5987(server, name):
    (server.base / "output").mkdir(parents=True, exist_ok=True)
    (server.base / "output" / name).write_bytes(png())
    for params in ({}, {"preview": "jpeg"}):
        response = httpx.get(f"{server.url}/view", params={"filename": name, **params})
        assert response.status_code == 200, response.text
        assert response.headers["content-disposition"] == f"inline; filename*=UTF-8''{quote(name, safe='')}"


def test_content_disposition_keeps_plain_names_plain():
    assert content_disposition("inline", "ComfyUI_00001_.png") == 'inline; filename="ComfyUI_00001_.png"'
    assert content_disposition("attachment", "a\r\nSet-Cookie: x.png") == \
        "attachment; filename*=UTF-8''a%0D%0ASet-Cookie%3A%20x.png"


# -- items 6, 7, 8: names the OS cannot look up ---------------------------------------------------

LONG = "a" * 300 + ".png"


def test_names_over_255_bytes_are_a_clear_4xx(server):
    for response in (
        httpx.get(f"{server.url}/view", params={"filename": LONG}),
        httpx.get(f"{server.url}/view", params={"filename": "x.png", "subfolder": LONG}),
        httpx.get(f"{server.url}/view", params={"filename": "é" * 200 + ".png"}),
        httpx.get(f"{server.url}/view", params={"filename": "x.png", "subfolder": "/".join(["b" * 250] * 20)}),
        upload(server, LONG, png()),
        upload(server, "x.png", png(), subfolder=LONG),
        httpx.get(f"{server.url}/userdata/{LONG}"),
        httpx.post(f"{server.url}/userdata/{LONG}", content=b"{}"),
        httpx.delete(f"{server.url}/userdata/{LONG}"),
        httpx.post(f"{server.url}/userdata/{LONG}/move/b.json"),
        httpx.get(f"{server.url}/userdata", params={"dir": LONG}),
        httpx.get(f"{server.url}/v2/userdata", params={"path": LONG}),
        httpx.get(f"{server.url}/assets/{LONG}"),
        httpx.get(f"{server.url}/api/assets/{LONG}"),
    ):
        assert 400 <= response.status_code < 500, (response.request.url, response.status_code, response.text)
        assert "255" in response.text or "longer" in response.text, response.text


def test_symlink_loops_are_a_clear_4xx_and_skipped_by_listings(server):
    for folder in (server.base / "input", server.base / "user" / "default"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "loop.png").unlink(missing_ok=True)
        (folder / "loop.png").symlink_to(folder / "loop.png")
    (server.base / "input" / "fine.png").write_bytes(png())
    view = httpx.get(f"{server.url}/view", params={"filename": "loop.png", "type": "input"})
    assert view.status_code == 400 and "symlink loop" in view.text
    for method in ("GET", "DELETE", "POST"):
        response = httpx.request(method, f"{server.url}/userdata/loop.png", content=b"x")
        assert 400 <= response.status_code < 500 and "symlink loop" in response.text, method
    listing = httpx.get(f"{server.url}/internal/files/input")
    assert listing.status_code == 200 and "fine.png" in listing.json() and "loop.png" not in listing.json()
    assert httpx.get(f"{server.url}/userdata", params={"dir": ".", "recurse": "true"}).status_code in (200, 403)
    assert httpx.get(f"{server.url}/v2/userdata").status_code == 200


@pytest.mark.parametrize("raw", ["%ff.json", "%C3%28.json", "workflows%2F%80a.json", "a.json/move/%fe.json"])
def test_non_utf8_percent_encoding_in_userdata_is_a_400(server, raw):
    for method in ("GET", "POST", "DELETE"):
        response = httpx.request(method, f"{server.url}/userdata/{raw}", content=b"{}")
        assert response.status_code == 400 and "UTF-8" in response.text, (method, raw, response.text)


# -- item 9: concurrent GET and DELETE of one user file -------------------------------------------

def test_concurrent_get_and_delete_answer_404_or_the_whole_file(server):
    content = bytes(range(256)) * 4096  # 1 MB
    url = f"{server.url}/userdata/race.bin"
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def reader() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                response = client.get(url)
                seen.append((response.status_code, len(response.content)))
                if response.status_code == 200:
                    assert response.content == content

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    with httpx.Client(timeout=30) as client:
        for _ in range(25):
            assert client.post(url, content=content).status_code == 200
            assert client.delete(url).status_code in (204, 404)
    stop.set()
    for thread in threads:
        thread.join()
    assert seen and {status for status, _ in seen} <= {200, 404}
    assert all(size == len(content) for status, size in seen if status == 200)


# -- item 10: the OpenAPI document declares every path parameter ----------------------------------

def test_openapi_declares_every_path_parameter(server):
    document = httpx.get(f"{server.url}/openapi.json").json()
    assert any(path.startswith("/userdata/") for path in document["paths"])
    for path, operations in document["paths"].items():
        wanted = set(re.findall(r"{(\w+)(?::\w+)?}", path))
        for method, operation in operations.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == wanted, (method, path, declared)
