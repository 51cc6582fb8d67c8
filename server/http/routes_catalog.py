"""What the editor lists besides nodes: plugin translations (``/i18n``), plugin workflow templates,
the editor's own extension scripts, embeddings, the model library (``/experiment/models``), and
the template gallery (the project's example workflows) and the global subgraphs (none)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response

from graph_runtime.folders import MODEL_FOLDERS, FolderPaths
from server.http.frontend_http import join_or_refuse, media_type, read_json_file
from server.settings import ServerSettings
from server.templates import CATALOG, DEFAULT_TEMPLATES_DIR

# Folders of a plugin whose *.json files are offered as workflow templates, first found wins.
TEMPLATE_FOLDERS = ("example_workflows", "workflow_templates", "examples")
# Per-language files of a plugin's locales/<lang>/ folder merged into /i18n, besides main.json.
LOCALE_SECTIONS = ("nodeDefs", "commands", "settings")


def plugin_folders(settings: ServerSettings) -> dict[str, Path]:
    """Folder plugins by name, found without importing them (the workers import the code)."""
    found: dict[str, Path] = {}
    for directory in settings.plugin_dirs:
        if Path(directory).is_dir():
            for path in sorted(Path(directory).iterdir()):
                if path.is_dir() and not path.name.startswith((".", "_")):
                    found.setdefault(path.name, path)
    return found


def template_folder(plugin: Path) -> Path | None:
    return next((plugin / f for f in TEMPLATE_FOLDERS if (plugin / f).is_dir()), None)


def _deep_merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


def plugin_translations(plugins: dict[str, Path]) -> dict[str, Any]:
    """ComfyUI's custom-node i18n: locales/<lang>/main.json at the top level of each language,
    nodeDefs/commands/settings.json under their own keys, merged over every plugin."""
    merged: dict[str, Any] = {}
    for plugin in plugins.values():
        for lang_dir in sorted((plugin / "locales").glob("*/")):
            main = read_json_file(lang_dir / "main.json")
            lang: dict[str, Any] = dict(main) if isinstance(main, dict) else {}
            for section in LOCALE_SECTIONS:
                value = read_json_file(lang_dir / f"{section}.json")
                if isinstance(value, dict):
                    lang[section] = value
            _deep_merge(merged.setdefault(lang_dir.name, {}), lang)
    return merged


def model_library(folders: FolderPaths, folder: str) -> list[dict[str, Any]]:
    """The files of one models folder with the index of the root each was found in."""
    roots = folders.model_dirs(folder)
    entries = []
    for name in folders.list_models(folder):
        index = next(i for i, root in enumerate(roots) if (root / name).exists())
        stat = (roots[index] / name).stat()
        entries.append({"name": name, "pathIndex": index, "modified": stat.st_mtime,
                        "created": stat.st_ctime, "size": stat.st_size})
    return entries


def catalog_router(settings: ServerSettings, root: Path | None) -> APIRouter:
    """``root`` is the frontend's static folder, whose extensions/ scripts ``/extensions`` lists."""
    router = APIRouter()
    _plugin_routes(router, settings)
    _editor_routes(router, settings, root)
    return router


def _plugin_routes(router: APIRouter, settings: ServerSettings) -> None:
    @router.get("/i18n")
    async def i18n() -> dict[str, Any]:
        return plugin_translations(plugin_folders(settings))

    @router.get("/workflow_templates")
    async def workflow_templates() -> dict[str, list[str]]:
        listing = {}
        for name, plugin in plugin_folders(settings).items():
            folder = template_folder(plugin)
            if folder is not None:
                listing[name] = sorted(p.stem for p in folder.glob("*.json"))
        return {name: names for name, names in listing.items() if names}

    @router.get("/workflow_templates/{plugin}/{name:path}")
    async def workflow_template(plugin: str, name: str) -> Response:
        plugins = plugin_folders(settings)
        folder = template_folder(plugins[plugin]) if plugin in plugins else None
        if folder is None:
            return PlainTextResponse(f"no plugin {plugin!r} with workflow templates", status_code=404)
        path = join_or_refuse(folder, name)
        if isinstance(path, Response):
            return path
        if not path.is_file():
            return PlainTextResponse(f"plugin {plugin!r} has no template {name!r}", status_code=404)
        return FileResponse(path, media_type=media_type(path))


def _editor_routes(router: APIRouter, settings: ServerSettings, root: Path | None) -> None:
    @router.get("/extensions")
    async def extensions() -> list[str]:
        # The editor's own extensions/ scripts, as ComfyUI lists them (the editor skips the
        # extensions/core shims itself). Plugins here ship Python nodes, not browser scripts.
        if root is None or not (root / "extensions").is_dir():
            return []
        return sorted("/" + p.relative_to(root).as_posix() for p in (root / "extensions").rglob("*.js"))

    @router.get("/embeddings")
    async def embeddings() -> list[str]:
        return [os.path.splitext(name)[0] for name in settings.folders.list_models("embeddings")]

    @router.get("/templates/{name}")
    async def core_templates(name: str) -> Response:
        # The editor's template gallery: the project's example workflows (server.templates).
        # Every locale gets the English index (index.<lang>.json), as the editor falls back to.
        folder = settings.templates_dir or DEFAULT_TEMPLATES_DIR
        if re.fullmatch(r"index(\.[\w-]+)?\.json", name):
            index = read_json_file(folder / "index.json")
            return JSONResponse(index if isinstance(index, list) else [])
        if name == "index_logo.json":
            return JSONResponse({})
        path = join_or_refuse(folder, name)
        if isinstance(path, Response):
            return path
        if name == CATALOG or not path.is_file():
            return PlainTextResponse(f"no template file {name!r}", status_code=404)
        return FileResponse(path, media_type=media_type(path))

    @router.get("/global_subgraphs")
    async def global_subgraphs() -> dict[str, Any]:
        # Subgraph blueprints shipped by node packs; ours ship Python nodes only.
        return {}

    @router.get("/global_subgraphs/{subgraph_id}")
    async def global_subgraph(subgraph_id: str) -> Response:
        return JSONResponse({"error": f"no global subgraph {subgraph_id!r}"}, status_code=404)

    @router.get("/experiment/models")
    async def model_folders() -> list[dict[str, Any]]:
        # The editor's model library sidebar: every models folder and where it is looked up.
        return [{"name": name, "folders": [str(p) for p in settings.folders.model_dirs(name)]}
                for name in MODEL_FOLDERS]

    @router.get("/experiment/models/{folder}")
    async def model_files(folder: str) -> Response:
        if folder not in MODEL_FOLDERS:
            return JSONResponse({"error": f"unknown models folder {folder!r}"}, status_code=404)
        return JSONResponse(model_library(settings.folders, folder))
