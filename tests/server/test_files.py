"""POST /upload/image storing files as ComfyUI does (server/http/files.py)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from graph_runtime import FolderPaths
from server.http.routes_files import files_router
from server.settings import ServerSettings


def png(color: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def settings(tmp_path: Path) -> ServerSettings:
    return ServerSettings(folders=FolderPaths(base=tmp_path / "home"))


@pytest.fixture
def client(settings: ServerSettings) -> TestClient:
    app = FastAPI()
    app.include_router(files_router(settings))
    return TestClient(app)


def upload(client: TestClient, data: bytes, name: str = "photo.png", **form: str) -> str:
    answer = client.post("/upload/image", files={"image": (name, data, "image/png")}, data=form)
    assert answer.status_code == 200, answer.text
    return answer.json()["name"]


def test_identical_bytes_under_a_taken_name_reuse_the_file(client: TestClient, settings: ServerSettings) -> None:
    first, second = png(0x102030), png(0x405060)
    assert upload(client, first) == "photo.png"
    assert upload(client, first) == "photo.png"  # the editor re-uploads on every drop or paste
    assert upload(client, second) == "photo (1).png"
    # Each taken name is compared in turn, so an earlier copy is found too.
    assert upload(client, second) == "photo (1).png"
    assert upload(client, first) == "photo.png"
    files = sorted(os.listdir(settings.folders.input_dir))
    assert files == ["photo (1).png", "photo.png"]
    assert (settings.folders.input_dir / "photo (1).png").read_bytes() == second


def test_same_size_but_different_bytes_still_get_a_new_name(client: TestClient, settings: ServerSettings) -> None:
    first, other = png(0x000001), png(0x000002)
    assert len(other) == len(first) and other != first
    assert upload(client, first) == "photo.png"
    assert upload(client, other) == "photo (1).png"


def test_overwrite_still_replaces(client: TestClient, settings: ServerSettings) -> None:
    upload(client, png(1))
    assert upload(client, png(2), overwrite="true") == "photo.png"
    assert (settings.folders.input_dir / "photo.png").read_bytes() == png(2)
