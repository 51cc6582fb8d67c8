"""The editor's template browser filled with the project's example workflows.

ComfyUI's frontend reads its gallery from ``/templates/index.json`` (the format of the
``comfyui-workflow-templates`` package: a list of categories ``{moduleName, title, type,
templates: [{name, title, description, mediaType, mediaSubtype, tags, models}]}``), then
``/templates/<name>.json`` (a UI-format workflow) and the thumbnail ``/templates/<name>-1.<mediaSubtype>``.

The gallery is built, not written by hand: ``python -m server.templates`` runs every
``workflows/*.json`` on the tiny random-weight zoo, and writes into ``workflows/templates/`` each
workflow laid out for the editor (``graph_runtime.api_to_ui``), a 128-pixel WEBP thumbnail of its
first output image, and ``index.json``, with titles and descriptions from
``workflows/templates/catalog.json``.
The files are committed; the server only reads them (this module imports no node pack unless run).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graph_runtime import NodeRegistry

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
DEFAULT_TEMPLATES_DIR = WORKFLOWS / "templates"
CATALOG = "catalog.json"  # the titles and descriptions the build reads; not served
THUMBNAIL_PIXELS = 128
MODULE = {"moduleName": "default", "title": "NodeLoom examples", "type": "image"}


def template_entry(name: str, meta: dict[str, Any], prompt: dict[str, Any], registry: NodeRegistry) -> dict[str, Any]:
    """One template of the index: ``meta`` ({title, description, tags}) from templates.json, the
    models the workflow picks (every value of a model-file input, folders such as a scorer's
    included) as ``models``."""
    models = sorted({v for node in prompt.values() if (cls := registry.get(str(node.get("class_type")))) is not None
                     for k, v in node.get("inputs", {}).items()
                     if isinstance(v, str) and (spec := cls.input_spec(k)) is not None and spec.model_folder})
    return {"name": name, "title": meta.get("title", name), "description": meta.get("description", ""),
            "mediaType": "image", "mediaSubtype": "webp", "tags": meta.get("tags", []), "models": models}


def build(out: Path = DEFAULT_TEMPLATES_DIR, workflows: Path = WORKFLOWS) -> list[Path]:
    """Run every example workflow on a fresh tiny zoo and write the gallery into ``out``.
    Raises RuntimeError naming a workflow that fails or makes no image."""
    from PIL import Image, ImageOps

    from graph_runtime import FolderPaths, load_registry
    from graph_runtime.api_to_ui import api_to_ui
    from graph_runtime.executor import Runtime
    from graph_runtime.formats import apply_overrides
    from nodes.diffusion.zoo import write_example_inputs, write_tiny_zoo

    metadata = json.loads((out / CATALOG).read_text())
    registry = load_registry()  # every installed pack, as `nodeloom run` loads them
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        write_tiny_zoo(base / "models")
        write_example_inputs(base / "input")
        registry.startup({"base": str(base), "models": [str(base / "models")]})
        folders = FolderPaths(base=base)
        registry.add_bundled_model_paths(folders)  # the demo workflow's trained models
        runtime = Runtime(registry, folders=folders)
        for path in sorted(workflows.glob("*.json")):
            name, prompt = path.stem, json.loads(path.read_text())
            # A catalog entry's "build_set" (NODE.INPUT=VALUE, as `nodeloom run --set`) shortens a
            # workflow that trains for long (train_demo) for its thumbnail run; the gallery serves it as is.
            result = runtime.execute(apply_overrides(prompt, metadata.get(name, {}).get("build_set", [])))
            if result.status != "success":
                raise RuntimeError(f"{path.name} did not run: {result.error}")
            image = _first_image(result.outputs, base)
            if image is None:
                raise RuntimeError(f"{path.name} made no image to show")
            with Image.open(image) as picture:
                # The tiny zoo makes 64-pixel images: scaled up without smoothing, cropped square.
                thumb = ImageOps.fit(picture.convert("RGB"), (THUMBNAIL_PIXELS,) * 2, Image.Resampling.NEAREST)
                thumb.save(out / f"{name}-1.webp", format="WEBP", quality=80)
            (out / f"{name}.json").write_text(json.dumps(api_to_ui(prompt, registry), indent=1) + "\n")
            entries.append(template_entry(name, metadata.get(name, {}), prompt, registry))
            written += [out / f"{name}.json", out / f"{name}-1.webp"]
    order = list(metadata)
    entries.sort(key=lambda e: (order.index(e["name"]) if e["name"] in order else len(order), e["name"]))
    (out / "index.json").write_text(json.dumps([{**MODULE, "templates": entries}], indent=1) + "\n")
    return [*written, out / "index.json"]


def _first_image(outputs: dict[str, Any], base: Path) -> Path | None:
    for node_id in sorted(outputs, key=lambda n: (len(n), n)):
        for item in outputs[node_id].get("images", []):
            return base / item.get("type", "output") / item.get("subfolder", "") / item["filename"]
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.templates", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_TEMPLATES_DIR)
    args = parser.parse_args(argv)
    for path in build(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
