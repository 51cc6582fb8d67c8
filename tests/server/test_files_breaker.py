"""Files and user data under hostile input: names that are not UTF-8, parallel decodes, JSON nested
too deeply, user files standing where a folder is needed, parallel uploads under one name, FIFOs."""

from __future__ import annotations

import io
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from graph_runtime.context import HookContext
from graph_runtime.folders import FolderPaths, UnsafePath, safe_join, servable_name
from nodes.core.image_io import input_images
from server.http import files as files_module
from server.http.files import FileRequestError, store_mask, store_upload, view
from server.http.frontend import frontend_router
from server.http.routes_files import files_router
from server.settings import ServerSettings

SURROGATE = "caf\udce9.png"  # what a JSON "caf\udce9.png" or a Latin-1 name on disk decodes to
LATIN1_ON_DISK = b"caf\xe9.png"


def png(size: tuple[int, int] = (4, 4), color: int = 0, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def settings(tmp_path: Path) -> ServerSettings:
    return ServerSettings(folders=FolderPaths(base=tmp_path / "home"))


@pytest.fixture
def client(settings: ServerSettings) -> TestClient:
    app = FastAPI()
    app.include_router(frontend_router(settings))
    app.include_router(files_router(settings))
    return TestClient(app)


def user_dir(settings: ServerSettings) -> Path:
    assert settings.user_dir is not None
    path = settings.user_dir / "default"
    path.mkdir(parents=True, exist_ok=True)
    return path


def put_latin1_file(directory: Path, data: bytes = b"x") -> None:
    """A file whose name is not UTF-8 on disk (written by another program)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(os.path.join(os.fsencode(directory), LATIN1_ON_DISK), "wb") as out:
        out.write(data)


# -- A: names that are not UTF-8 -------------------------------------------------------------------

def test_servable_name_and_safe_join_refuse_lone_surrogates(tmp_path: Path) -> None:
    assert servable_name("café.png") and not servable_name(SURROGATE)
    with pytest.raises(UnsafePath, match="not valid UTF-8"):
        safe_join(tmp_path, SURROGATE)
    with pytest.raises(UnsafePath):
        safe_join(tmp_path, f"sub/{SURROGATE}")


def test_upload_with_a_surrogate_name_is_refused_and_nothing_stored(settings: ServerSettings) -> None:
    with pytest.raises(FileRequestError) as refused:
        store_upload(settings.folders, png(), filename=SURROGATE, max_bytes=1 << 20)
    assert refused.value.status == 400 and "UTF-8" in refused.value.message
    assert not settings.folders.input_dir.exists() or not os.listdir(settings.folders.input_dir)


def test_listings_skip_names_that_are_not_utf8(client: TestClient, settings: ServerSettings) -> None:
    folders = settings.folders
    for directory in (folders.input_dir, folders.output_dir, folders.models_roots[0] / "checkpoints"):
        put_latin1_file(directory, png())
    (folders.input_dir / "ok.png").write_bytes(png())
    (folders.models_roots[0] / "checkpoints" / "ok.safetensors").write_bytes(b"x")
    workflows = user_dir(settings) / "workflows"
    put_latin1_file(workflows)
    (workflows / "ok.json").write_text("{}")

    assert folders.list_models("checkpoints") == ["ok.safetensors"]
    assert input_images(HookContext(folders=folders)) == ["ok.png"]
    for kind, expected in (("input", ["ok.png"]), ("output", [])):
        answer = client.get(f"/internal/files/{kind}")
        assert answer.status_code == 200 and answer.json() == expected
    listed = client.get("/userdata", params={"dir": "workflows"})
    assert listed.status_code == 200 and listed.json() == ["ok.json"]
    full = client.get("/userdata", params={"dir": "workflows", "full_info": "true"})
    assert full.status_code == 200 and [e["path"] for e in full.json()] == ["ok.json"]
    v2 = client.get("/v2/userdata")
    assert v2.status_code == 200 and [e["path"] for e in v2.json()] == ["workflows", "workflows/ok.json"]


# -- B: parallel decodes bounded -------------------------------------------------------------------

def test_parallel_decodes_never_exceed_the_slots(settings: ServerSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    real_decode = files_module._decode
    lock, active, peak = threading.Lock(), [0], [0]

    def recording_decode(data: bytes, max_pixels: int) -> Image.Image:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.02)  # widens the window where an unbounded version would overlap
            return real_decode(data, max_pixels)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(files_module, "_decode", recording_decode)
    folders = settings.folders
    store_upload(folders, png(), filename="original.png", max_bytes=1 << 20)
    (folders.output_dir).mkdir(parents=True, exist_ok=True)
    (folders.output_dir / "out.png").write_bytes(png())

    def one(i: int) -> None:
        if i % 3 == 0:
            store_upload(folders, png(color=i), filename=f"u{i}.png", max_bytes=1 << 20)
        elif i % 3 == 1:
            store_mask(folders, png(mode="RGBA"), filename=f"m{i}.png", original_ref='{"filename": "original.png"}',
                       max_bytes=1 << 20)
        else:
            view(folders, filename="out.png", preview="webp;50")

    with ThreadPoolExecutor(max_workers=12) as pool:
        list(pool.map(one, range(36)))
    assert 1 <= peak[0] <= files_module.MAX_PARALLEL_DECODES


# -- C: JSON nested too deeply ---------------------------------------------------------------------

def test_deeply_nested_settings_body_is_a_400(client: TestClient) -> None:
    answer = client.post("/settings", content="[" * 100000)
    assert answer.status_code == 400


def test_deeply_nested_settings_file_does_not_break_the_settings_routes(client: TestClient) -> None:
    stored = client.post(f"/userdata/{quote('comfy.settings.json', safe='')}", content="[" * 100000)
    assert stored.status_code == 200
    assert client.get("/settings").json() == {}  # unreadable: as if empty (logged)
    assert client.get("/settings/Comfy.Theme").status_code == 200
    # Saving one setting replaces the unreadable file, as the settings routes document.
    assert client.post("/settings/Comfy.Theme", json="dark").status_code == 200
    assert client.get("/settings").json() == {"Comfy.Theme": "dark"}


# -- D: a user file standing where a folder is needed ----------------------------------------------

def test_user_file_used_as_a_parent_folder_is_a_409(client: TestClient) -> None:
    assert client.post("/userdata/a.json", content="{}").status_code == 200
    for target in ("a.json%2Fb.json", "a.json%2Fdeeper%2Fb.json"):
        answer = client.post(f"/userdata/{target}", content="{}")
        assert answer.status_code == 409 and "is a file" in answer.text
    assert client.post("/userdata/c.json", content="{}").status_code == 200
    moved = client.post("/userdata/c.json/move/a.json%2Fc.json")
    assert moved.status_code == 409 and "is a file" in moved.text
    assert client.get("/userdata/c.json").status_code == 200  # the source is untouched


def test_move_onto_a_folder_is_a_409_not_a_move_into_it(client: TestClient, settings: ServerSettings) -> None:
    (user_dir(settings) / "workflows").mkdir()
    assert client.post("/userdata/c.json", content="{}").status_code == 200
    moved = client.post("/userdata/c.json/move/workflows")
    assert moved.status_code == 409 and "folder" in moved.text
    assert not (user_dir(settings) / "workflows" / "c.json").exists()


# -- E: parallel uploads under one name ------------------------------------------------------------

def test_parallel_uploads_under_one_name_each_keep_their_bytes(client: TestClient, settings: ServerSettings) -> None:
    count = 16
    bodies = [png(color=i * 10) for i in range(count)]

    def one(i: int) -> str:
        answer = client.post("/upload/image", files={"image": ("image.png", bodies[i], "image/png")})
        assert answer.status_code == 200, answer.text
        return answer.json()["name"]

    with ThreadPoolExecutor(max_workers=count) as pool:
        names = list(pool.map(one, range(count)))
    assert len(set(names)) == count
    input_dir = settings.folders.input_dir
    assert sorted(bodies) == sorted((input_dir / name).read_bytes() for name in names)
    assert sorted(os.listdir(input_dir)) == sorted(names)  # no temp file left behind


# -- F: FIFOs and other non-regular files ----------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_reading_a_fifo_user_file_is_refused_without_blocking(client: TestClient, settings: ServerSettings) -> None:
    os.mkfifo(user_dir(settings) / "fifo.json")
    result: list[int] = []
    reader = threading.Thread(target=lambda: result.append(client.get("/userdata/fifo.json").status_code),
                              daemon=True)
    reader.start()
    reader.join(timeout=20)
    assert result == [400]


def test_reading_a_folder_as_a_user_file_is_a_404(client: TestClient, settings: ServerSettings) -> None:
    (user_dir(settings) / "workflows" / "inner").mkdir(parents=True)
    for name in ("workflows", "workflows%2Finner"):
        answer = client.get(f"/userdata/{name}")
        assert answer.status_code == 404, (name, answer.status_code)
