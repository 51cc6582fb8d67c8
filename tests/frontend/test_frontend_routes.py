"""The frontend-support routes, answered as the ComfyUI frontend expects, and never a way out of
their folders."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from graph_runtime.folders import FolderPaths
from server.http.frontend import default_frontend_root, frontend_router
from server.execution.outcome import RunFailure
from server.queue.store import QueueStore
from server.settings import ServerSettings

SECRET = "top secret, outside every served folder"


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "secret.txt").write_text(SECRET)
    return tmp_path / "home"


def _client(settings: ServerSettings) -> TestClient:
    app = FastAPI()
    router = frontend_router(settings)
    # As the server mounts it: every route also under /api.
    app.include_router(router)
    app.include_router(router, prefix="/api")
    return TestClient(app)


@pytest.fixture
def settings(base: Path) -> ServerSettings:
    plugins = base / "plugins"
    pack = plugins / "tiny_pack"
    (pack / "example_workflows").mkdir(parents=True)
    (pack / "__init__.py").write_text("")
    (pack / "example_workflows" / "invert.json").write_text('{"1": {"class_type": "X", "inputs": {}}}')
    (pack / "locales" / "en").mkdir(parents=True)
    (pack / "locales" / "en" / "main.json").write_text('{"greeting": "hi"}')
    (pack / "locales" / "en" / "nodeDefs.json").write_text('{"TinyInvert": {"display_name": "Tiny invert"}}')
    (pack / "locales" / "fr").mkdir(parents=True)
    (pack / "locales" / "fr" / "main.json").write_text('{"greeting": "salut"}')
    return ServerSettings(folders=FolderPaths(base=base), plugin_dirs=[plugins])


@pytest.fixture
def client(settings: ServerSettings) -> TestClient:
    return _client(settings)


def user_dir(settings: ServerSettings) -> Path:
    assert settings.user_dir is not None
    return settings.user_dir / "default"


# -- static frontend ---------------------------------------------------------------------------


@pytest.mark.skipif(default_frontend_root() is None, reason="comfyui-frontend-package is not installed")
def test_index_and_assets_served_with_comfyui_cache_headers(client: TestClient) -> None:
    index = client.get("/")
    assert index.status_code == 200 and 'id="vue-app"' in index.text
    assert index.headers["cache-control"] == "no-cache"
    script = next(p for p in (default_frontend_root() / "assets").glob("index-*.js"))  # type: ignore[operator]
    first = client.get(f"/assets/{script.name}")
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/javascript")
    assert first.headers["cache-control"] == "no-cache"
    again = client.get(f"/assets/{script.name}", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert client.get("/assets/favicon.ico").headers["cache-control"] == "public, max-age=86400"
    assert client.get("/assets/no-such-file.js").status_code == 404


@pytest.mark.skipif(default_frontend_root() is None, reason="comfyui-frontend-package is not installed")
def test_stylesheets_index_html_links_are_answered(client: TestClient, settings: ServerSettings) -> None:
    for url in ("/user.css", "/api/userdata/user.css", "/materialdesignicons.min.css"):
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["content-type"].startswith("text/css"), url
    assert client.get("/api/userdata/user.css").text == ""
    client.post("/api/userdata/user.css", content=b"body { color: red }")
    assert client.get("/api/userdata/user.css").text == "body { color: red }"


@pytest.mark.skipif(default_frontend_root() is None, reason="comfyui-frontend-package is not installed")
def test_extensions_lists_fetchable_frontend_scripts(client: TestClient) -> None:
    listed = client.get("/api/extensions").json()
    assert listed and all(url.startswith("/extensions/") and url.endswith(".js") for url in listed)
    assert client.get(listed[0]).status_code == 200


def test_frontend_root_option_serves_another_build(base: Path, tmp_path: Path) -> None:
    build = tmp_path / "my-build"
    (build / "assets").mkdir(parents=True)
    (build / "index.html").write_text("<html>my build</html>")
    (build / "assets" / "app.js").write_text("console.log(1)")
    (build / "extensions" / "mine").mkdir(parents=True)
    (build / "extensions" / "mine" / "ext.js").write_text("")
    client = _client(ServerSettings(folders=FolderPaths(base=base), frontend_root=build))
    assert client.get("/").text == "<html>my build</html>"
    assert client.get("/assets/app.js").text == "console.log(1)"
    assert client.get("/api/extensions").json() == ["/extensions/mine/ext.js"]
    assert client.get("/materialdesignicons.min.css").status_code == 404


def test_template_gallery_serves_the_example_workflows(client: TestClient) -> None:
    for name in ("index.json", "index.fr.json", "index.zh-CN.json"):
        response = client.get(f"/templates/{name}")
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        [module] = response.json()
        assert module["moduleName"] == "default"
        assert [t["name"] for t in module["templates"]][0] == "txt2img"
    template = module["templates"][0]
    assert template["title"] == "Text to image" and template["mediaSubtype"] == "webp"
    assert template["models"] == ["tiny-sd15.safetensors"]
    workflow = client.get("/templates/txt2img.json")
    assert workflow.status_code == 200 and {n["type"] for n in workflow.json()["nodes"]} >= {"KSampler", "SaveImage"}
    thumbnail = client.get("/templates/txt2img-1.webp")
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/webp"
    assert client.get("/templates/other.json").status_code == 404
    assert client.get("/templates/catalog.json").status_code == 404  # the build's input, not a template


def test_another_template_folder(base: Path, tmp_path: Path) -> None:
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    (gallery / "index.json").write_text('[{"moduleName": "default", "title": "Mine", "templates": []}]')
    client = _client(ServerSettings(folders=FolderPaths(base=base), templates_dir=gallery))
    assert client.get("/templates/index.json").json()[0]["title"] == "Mine"
    empty = _client(ServerSettings(folders=FolderPaths(base=base), templates_dir=tmp_path / "none"))
    assert empty.get("/templates/index.json").json() == []


# -- users and settings ------------------------------------------------------------------------


def test_users_single_user_mode(client: TestClient, settings: ServerSettings) -> None:
    assert client.get("/api/users").json() == {"storage": "server", "migrated": False}
    client.post("/api/settings", json={"Comfy.Locale": "en"})
    assert client.get("/api/users").json() == {"storage": "server", "migrated": True}
    refused = client.post("/api/users", json={"username": "bob"})
    assert refused.status_code == 400 and "single-user" in refused.json()["error"]


def test_settings_round_trip_and_merge(client: TestClient, settings: ServerSettings) -> None:
    assert client.get("/api/settings").json() == {}
    assert client.post("/api/settings", json={"Comfy.Locale": "fr", "Comfy.Sidebar.Size": 3}).status_code == 200
    assert client.post("/api/settings", json={"Comfy.Locale": "en"}).status_code == 200
    assert client.post("/api/settings/Comfy.ColorPalette", json="dark").status_code == 200
    assert client.post("/api/settings/Comfy.Workflow.Tabs", json={"a": [1, 2]}).status_code == 200
    expected = {"Comfy.Locale": "en", "Comfy.Sidebar.Size": 3, "Comfy.ColorPalette": "dark",
                "Comfy.Workflow.Tabs": {"a": [1, 2]}}
    assert client.get("/api/settings").json() == expected
    assert client.get("/api/settings/Comfy.ColorPalette").json() == "dark"
    assert client.get("/api/settings/Not.There").json() is None
    on_disk = json.loads((user_dir(settings) / "comfy.settings.json").read_text())
    assert on_disk == expected


def test_unreadable_settings_file_reads_as_empty(client: TestClient, settings: ServerSettings) -> None:
    user_dir(settings).mkdir(parents=True)
    (user_dir(settings) / "comfy.settings.json").write_text("{not json")
    assert client.get("/api/settings").json() == {}
    assert client.post("/api/settings", json="not an object").status_code == 400


# -- user data ---------------------------------------------------------------------------------


def test_userdata_write_list_move_delete(client: TestClient, settings: ServerSettings) -> None:
    saved = client.post("/api/userdata/workflows%2Fmine%2Fa.json?overwrite=true&full_info=true",
                        content=b'{"nodes": []}')
    assert saved.status_code == 200
    info = saved.json()
    assert info["path"] == "workflows/mine/a.json" and info["size"] == 13 and info["modified"] > 0
    assert (user_dir(settings) / "workflows" / "mine" / "a.json").read_bytes() == b'{"nodes": []}'
    refused = client.post("/api/userdata/workflows%2Fmine%2Fa.json?overwrite=false", content=b"{}")
    assert refused.status_code == 409
    assert client.post("/api/userdata/workflows%2Fb.json", content=b"[]").json() == "workflows/b.json"

    assert client.get("/api/userdata?dir=workflows&recurse=true").json() == ["b.json", "mine/a.json"]
    assert client.get("/api/userdata?dir=workflows").json() == ["b.json"]
    assert client.get("/api/userdata?dir=workflows/&recurse=true&split=true").json() == [
        ["b.json", "b.json"], ["mine/a.json", "mine", "a.json"]]
    full = client.get("/api/userdata?dir=workflows%2F&recurse=true&split=false&full_info=true").json()
    assert [f["path"] for f in full] == ["b.json", "mine/a.json"]
    assert client.get("/api/userdata?dir=subgraphs%2F&recurse=true&full_info=true").json() == []
    assert client.get("/api/userdata").status_code == 400

    assert client.get("/api/userdata/workflows%2Fmine%2Fa.json").content == b'{"nodes": []}'
    assert client.get("/api/userdata/workflows%2Fnope.json").status_code == 404

    blocked = client.post("/api/userdata/workflows%2Fb.json/move/workflows%2Fmine%2Fa.json?overwrite=false")
    assert blocked.status_code == 409
    moved = client.post("/api/userdata/workflows%2Fb.json/move/workflows%2Frenamed%20b.json?overwrite=true")
    assert moved.json() == "workflows/renamed b.json"
    assert not (user_dir(settings) / "workflows" / "b.json").exists()
    assert client.get("/api/userdata/workflows%2Frenamed%20b.json").content == b"[]"

    assert client.delete("/api/userdata/workflows%2Frenamed%20b.json").status_code == 204
    assert client.delete("/api/userdata/workflows%2Frenamed%20b.json").status_code == 404

    listing = client.get("/api/v2/userdata").json()
    assert {"name": "workflows", "path": "workflows", "type": "directory"} in listing
    files = [e for e in listing if e["type"] == "file"]
    assert [f["path"] for f in files] == ["workflows/mine/a.json"] and files[0]["size"] == 13
    assert client.get("/api/v2/userdata?path=workflows%2Fmine").json()[0]["name"] == "a.json"
    assert client.get("/api/v2/userdata?path=nowhere").status_code == 404


HOSTILE_NAMES = [
    "..%2Fsecret.txt",
    "..%2F..%2Fsecret.txt",
    "workflows%2F..%2F..%2F..%2Fsecret.txt",
    "%2E%2E%2F%2E%2E%2Fsecret.txt",
    "%2E%2E",
    "%2Fetc%2Fpasswd",
    "%2F..%2F..%2Fsecret.txt",
    "..%5C..%5Csecret.txt",
    "C:%5Csecret.txt",
    "a%00b.json",
    "workflows%2F%2F..%2Fx",
    "outside_link%2Fsecret.txt",
    "link_file.txt",
]


@pytest.fixture
def trap(settings: ServerSettings, base: Path) -> Path:
    """Symlinks inside the user folder that point out of it (made before the first request)."""
    root = user_dir(settings)
    root.mkdir(parents=True)
    os.symlink(base.parent, root / "outside_link")
    os.symlink(base.parent / "secret.txt", root / "link_file.txt")
    return base.parent / "secret.txt"


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_userdata_names_never_leave_the_user_folder(client: TestClient, trap: Path, name: str) -> None:
    before = sorted(p.name for p in trap.parent.iterdir())
    for method, url in [("GET", f"/api/userdata/{name}"),
                        ("POST", f"/api/userdata/{name}"),
                        ("POST", f"/api/userdata/{name}?overwrite=true&full_info=true"),
                        ("DELETE", f"/api/userdata/{name}"),
                        ("POST", f"/api/userdata/{name}/move/stolen.txt"),
                        ("POST", f"/api/userdata/workflows%2Fx.json/move/{name}"),
                        ("GET", f"/api/userdata?dir={name}&recurse=true"),
                        ("GET", f"/api/v2/userdata?path={name}"),
                        ("GET", f"/api/workflow_templates/tiny_pack/{name}"),
                        ("GET", f"/templates/{name}"),
                        ("GET", f"/assets/{name}")]:
        response = client.request(method, url, content=b"overwritten")
        assert response.status_code in (400, 403, 404), (method, url, response.status_code)
        assert SECRET not in response.text
    assert trap.read_text() == SECRET
    assert sorted(p.name for p in trap.parent.iterdir()) == before


def test_double_encoded_separator_stays_a_literal_name(client: TestClient, trap: Path,
                                                       settings: ServerSettings) -> None:
    # Decoded once, "..%252Fsecret.txt" is the plain file name "..%2Fsecret.txt" in the user folder.
    assert client.post("/api/userdata/..%252Fsecret.txt", content=b"mine").status_code == 200
    assert (user_dir(settings) / "..%2Fsecret.txt").read_bytes() == b"mine"
    assert trap.read_text() == SECRET


def test_links_out_of_the_user_folder_are_not_listed(client: TestClient, trap: Path) -> None:
    client.post("/api/userdata/workflows%2Fok.json", content=b"{}")
    listed = client.get("/api/userdata?dir=workflows&recurse=true").json()
    assert listed == ["ok.json"]
    everything = client.get("/api/v2/userdata").json()
    assert all("link" not in entry["path"] for entry in everything)


# -- catalogs ----------------------------------------------------------------------------------


def test_i18n_merges_plugin_locales(client: TestClient) -> None:
    assert client.get("/api/i18n").json() == {
        "en": {"greeting": "hi", "nodeDefs": {"TinyInvert": {"display_name": "Tiny invert"}}},
        "fr": {"greeting": "salut"},
    }


def test_workflow_templates_from_plugin_examples(client: TestClient) -> None:
    assert client.get("/api/workflow_templates").json() == {"tiny_pack": ["invert"]}
    template = client.get("/api/workflow_templates/tiny_pack/invert.json")
    assert template.status_code == 200 and template.json()["1"]["class_type"] == "X"
    assert client.get("/api/workflow_templates/tiny_pack/other.json").status_code == 404
    assert client.get("/api/workflow_templates/no_pack/invert.json").status_code == 404


def test_embeddings_are_listed_without_extension(client: TestClient, settings: ServerSettings) -> None:
    folder = settings.folders.models_roots[0] / "embeddings"
    (folder / "styles").mkdir(parents=True)
    (folder / "easynegative.safetensors").write_bytes(b"x")
    (folder / "styles" / "ink.pt").write_bytes(b"x")
    (folder / "notes.txt").write_text("not a model")
    assert client.get("/api/embeddings").json() == ["easynegative", "styles/ink"]


# -- /internal ---------------------------------------------------------------------------------


def test_internal_folder_paths(client: TestClient, settings: ServerSettings) -> None:
    paths = client.get("/internal/folder_paths").json()
    assert paths["checkpoints"] == [str(settings.folders.models_roots[0] / "checkpoints")]
    assert "loras" in paths and "embeddings" in paths


def test_internal_files_newest_first(client: TestClient, settings: ServerSettings) -> None:
    output = settings.folders.directory_for("output")
    output.mkdir(parents=True)
    for age, name in enumerate(["new.png", "mid.png", "old.png"]):
        (output / name).write_bytes(b"x")
        os.utime(output / name, (time.time() - 100 * age, time.time() - 100 * age))
    (output / ".DS_Store").write_bytes(b"x")
    (output / "subfolder").mkdir()
    assert client.get("/internal/files/output").json() == ["new.png", "mid.png", "old.png"]
    assert client.get("/internal/files/input").json() == []
    bad = client.get("/internal/files/secrets")
    assert bad.status_code == 400 and "secrets" in bad.json()["error"]


def test_internal_logs(client: TestClient) -> None:
    logging.getLogger("nodeloom.test").warning("a message for the log panel")
    assert "a message for the log panel" in client.get("/internal/logs").json()
    raw = client.get("/internal/logs/raw").json()
    assert raw["entries"][-1]["m"].endswith("a message for the log panel\n")
    assert set(raw["size"]) == {"cols", "rows"}
    assert client.patch("/internal/logs/subscribe", json={"enabled": True, "clientId": "abc"}).status_code == 200
    assert client.patch("/internal/logs/subscribe", json={"enabled": True}).status_code == 400


def test_model_library_folders_and_files(client: TestClient, settings: ServerSettings) -> None:
    folders = {f["name"]: f["folders"] for f in client.get("/api/experiment/models").json()}
    assert folders["loras"] == [str(settings.folders.models_roots[0] / "loras")]
    (settings.folders.models_roots[0] / "loras" / "style").mkdir(parents=True)
    (settings.folders.models_roots[0] / "loras" / "style" / "ink.safetensors").write_bytes(b"1234")
    files = client.get("/api/experiment/models/loras").json()
    assert [(f["name"], f["pathIndex"], f["size"]) for f in files] == [("style/ink.safetensors", 0, 4)]
    assert client.get("/api/experiment/models/nonsense").status_code == 404


def test_no_global_subgraphs(client: TestClient) -> None:
    assert client.get("/api/global_subgraphs").json() == {}
    assert client.get("/api/global_subgraphs/abc").status_code == 404


# -- /jobs -------------------------------------------------------------------------------------


class _Scheduler:
    """The two things /jobs needs from the server's scheduler: its store, cancel and interrupt."""

    def __init__(self, store: QueueStore) -> None:
        self.store = store
        self.interrupted: list[str] = []

    def cancel(self, prompt_ids: list[str]) -> list[str]:
        return self.store.cancel(prompt_ids)

    def interrupt(self, prompt_id: str | None) -> list[str]:
        self.interrupted.append(str(prompt_id))
        return [str(prompt_id)]


@pytest.fixture
def jobs(settings: ServerSettings, tmp_path: Path) -> tuple[TestClient, _Scheduler]:
    app = FastAPI()
    app.include_router(frontend_router(settings), prefix="/api")
    store = QueueStore(tmp_path / "queue.sqlite3")
    app.state.scheduler = _Scheduler(store)
    workflow = {"extra_pnginfo": {"workflow": {"id": "wf-1", "nodes": []}}}
    for prompt_id in ("done", "broken", "running", "waiting"):
        store.add(prompt_id, {"1": {"class_type": "X", "inputs": {}}}, workflow, ["1"], client_id="c")
    store.mark_running("done")
    store.finish("done", "success", outputs={"9": {"images": [
        {"filename": "a_00001_.png", "subfolder": "", "type": "output"}]}},
        messages=[["execution_start", {"prompt_id": "done", "timestamp": 1}]])
    store.mark_running("broken")
    failure = RunFailure("node", "ValueError", "boom", node_id="1", node_type="X", traceback=("line",))
    store.finish("broken", "error", messages=[["execution_error", failure.execution_error("broken")]],
                 error=failure.as_dict())
    store.mark_running("running")
    return TestClient(app), app.state.scheduler


def test_jobs_lists_queue_and_history_as_the_editor_parses_them(jobs: tuple[TestClient, _Scheduler]) -> None:
    client, _ = jobs
    queue = client.get("/api/jobs?status=in_progress,pending&limit=200&offset=0").json()
    assert {j["id"]: j["status"] for j in queue["jobs"]} == {"running": "in_progress", "waiting": "pending"}
    assert queue["pagination"] == {"offset": 0, "limit": 200, "total": 2, "has_more": False}
    history = client.get("/api/jobs?status=completed,failed,cancelled&limit=1&offset=0").json()
    assert history["pagination"]["total"] == 2 and history["pagination"]["has_more"] is True
    everything = {j["id"]: j for j in client.get("/api/jobs").json()["jobs"]}
    done, broken = everything["done"], everything["broken"]
    assert done["status"] == "completed" and done["outputs_count"] == 1
    assert done["preview_output"] == {"filename": "a_00001_.png", "subfolder": "", "type": "output",
                                      "nodeId": "9", "mediaType": "images"}
    assert done["workflow_id"] == "wf-1" and isinstance(done["create_time"], int)
    assert broken["status"] == "failed" and broken["execution_error"] == {
        "prompt_id": "broken", "node_id": "1", "node_type": "X", "exception_message": "boom",
        "exception_type": "ValueError", "traceback": ["line"]}
    assert client.get("/api/jobs?status=bogus").status_code == 400


def test_job_detail_and_cancel(jobs: tuple[TestClient, _Scheduler]) -> None:
    client, scheduler = jobs
    detail = client.get("/api/jobs/done").json()
    assert detail["outputs"]["9"]["images"][0]["filename"] == "a_00001_.png"
    assert detail["workflow"]["extra_data"]["extra_pnginfo"]["workflow"]["id"] == "wf-1"
    assert client.get("/api/jobs/nope").status_code == 404
    assert client.post("/api/jobs/waiting/cancel").json() == {"cancelled": ["waiting"], "interrupted": []}
    assert client.post("/api/jobs/cancel", json={"job_ids": ["running"]}).json() == {
        "cancelled": [], "interrupted": ["running"]}
    assert scheduler.interrupted == ["running"]
    assert client.post("/api/jobs/cancel", json={"ids": 3}).status_code == 400


def test_a_bad_job_query_names_each_bad_parameter(jobs: tuple[TestClient, _Scheduler]) -> None:
    client, _ = jobs
    answer = client.get("/api/jobs?sort_by=foo&status=done")
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "invalid_query"
    assert "sort_by: unknown 'foo'; use created_at, execution_duration" in error["details"]
    assert "status: unknown done" in error["details"] and "sort_order" not in error["details"]
