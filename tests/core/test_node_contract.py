"""The contract every registered node keeps (every installed pack's and the example plugin's): its schema
is plain JSON that states its declaration, and its defaults pass validation. The core nodes also
match ComfyUI's schema (names, input order, category, outputs) and run on their defaults."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

from graph_runtime import FolderPaths, HookContext, Node, NodeRegistry, Output, load_registry, validate
from graph_runtime.folders import DIRECTORY_MARKERS, MIXED_MARKERS
from graph_runtime.schema import node_schema

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"

# ComfyUI's declaration of each node: category, required inputs in order, optional inputs, outputs.
COMFY: dict[str, tuple[str, list[str], list[str], list[str]]] = {
    "LoadImage": ("image", ["image"], [], ["IMAGE", "MASK"]),
    "LoadImageMask": ("mask", ["image", "channel"], [], ["MASK"]),
    "SaveImage": ("image", ["images", "filename_prefix"], [], []),
    "PreviewImage": ("image", ["images"], [], []),
    "EmptyImage": ("image", ["width", "height", "batch_size", "color"], [], ["IMAGE"]),
    "ImageScale": ("image/upscaling", ["image", "upscale_method", "width", "height", "crop"], [], ["IMAGE"]),
    "ImageScaleBy": ("image/upscaling", ["image", "upscale_method", "scale_by"], [], ["IMAGE"]),
    "ImageInvert": ("image", ["image"], [], ["IMAGE"]),
    "ImageBlur": ("image/postprocessing", ["image", "blur_radius", "sigma"], [], ["IMAGE"]),
    "ImageCrop": ("image/transform", ["image", "width", "height", "x", "y"], [], ["IMAGE"]),
    "ImageBatch": ("image", ["image1", "image2"], [], ["IMAGE"]),
    "ImageCompositeMasked": ("image", ["destination", "source", "x", "y", "resize_source"], ["mask"],
                             ["IMAGE"]),
    "ImagePadForOutpaint": ("image", ["image", "left", "top", "right", "bottom", "feathering"], [],
                            ["IMAGE", "MASK"]),
    "SolidMask": ("mask", ["value", "width", "height"], [], ["MASK"]),
    "InvertMask": ("mask", ["mask"], [], ["MASK"]),
    "GrowMask": ("mask", ["mask", "expand", "tapered_corners"], [], ["MASK"]),
    "FeatherMask": ("mask", ["mask", "left", "top", "right", "bottom"], [], ["MASK"]),
    "MaskToImage": ("mask", ["mask"], [], ["IMAGE"]),
    "ImageToMask": ("mask", ["image", "channel"], [], ["MASK"]),
    "PrimitiveInt": ("utils/primitive", ["value"], [], ["INT"]),
    "PrimitiveFloat": ("utils/primitive", ["value"], [], ["FLOAT"]),
    "PrimitiveString": ("utils/primitive", ["value"], [], ["STRING"]),
    "PrimitiveStringMultiline": ("utils/primitive", ["value"], [], ["STRING"]),
    "PrimitiveBoolean": ("utils/primitive", ["value"], [], ["BOOLEAN"]),
}
DISPLAY_NAMES = {"LoadImage": "Load Image", "LoadImageMask": "Load Image (as Mask)",
                 "SaveImage": "Save Image", "PreviewImage": "Preview Image",
                 "ImageScale": "Upscale Image", "ImageScaleBy": "Upscale Image By",
                 "ImageInvert": "Invert Image", "ImagePadForOutpaint": "Pad Image for Outpainting",
                 "ImageBatch": "Batch Images", "ImageCrop": "Image Crop", "ImageBlur": "Image Blur",
                 "MaskToImage": "Convert Mask to Image", "ImageToMask": "Convert Image to Mask",
                 "PrimitiveStringMultiline": "String (Multiline)"}
# Small sources for link inputs, so every node can run on its widget defaults.
SOURCES = {"IMAGE": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1,
                                                            "color": 0x808080}},
           "MASK": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 48}}}


def test_registry_holds_exactly_the_core_nodes(core_registry):
    assert sorted(core_registry.nodes) == sorted(COMFY)
    assert {core_registry.origin[name] for name in COMFY} == {"nodes.core"}


@pytest.mark.parametrize("name", sorted(COMFY))
def test_schema_matches_comfyui(core_registry, graphs, name):
    cls = core_registry.nodes[name]
    schema = node_schema(cls, graphs.runtime.hook_context)
    assert json.loads(json.dumps(schema)) == schema  # plain JSON, as /object_info sends it
    category, required, optional, outputs = COMFY[name]
    assert schema["category"] == category
    assert schema["input_order"].get("required", []) == required
    assert schema["input_order"].get("optional", []) == optional
    assert schema["output"] == outputs and len(schema["output_name"]) == len(outputs)
    assert schema["display_name"] == DISPLAY_NAMES.get(name, name if not name.startswith("Primitive")
                                                       else name.removeprefix("Primitive"))
    assert schema["output_node"] == (name in ("SaveImage", "PreviewImage"))
    assert schema["description"], f"{name} has no description"
    for out in cls.outputs:
        assert out.type in core_registry.types, f"{name} outputs undeclared type {out.type}"


@pytest.mark.parametrize("name", sorted(COMFY))
def test_input_specs_have_comfy_shape(core_registry, graphs, name):
    for spec in core_registry.nodes[name].inputs:
        if spec.hidden:
            continue
        entry = spec.schema(graphs.runtime.hook_context)
        assert isinstance(entry, list) and len(entry) in (1, 2)
        if spec.type == "COMBO":
            assert all(isinstance(choice, str) for choice in entry[0])
        else:
            assert entry[0] == spec.type and spec.type in core_registry.types
        options = entry[1] if len(entry) == 2 else {}
        assert isinstance(options, dict)
        if spec.is_widget and spec.type != "COMBO":
            assert "default" in options, f"{name}.{spec.name} has no default"


def _default_prompt(cls, ctx: HookContext) -> dict:
    inputs = {}
    for spec in cls.inputs:
        if spec.hidden or spec.optional:
            continue
        if spec.is_widget:
            inputs[spec.name] = spec.default if spec.default is not None else spec.current_choices(ctx)[0]
        else:
            inputs[spec.name] = ["src_" + spec.type, 0]
    prompt = {"src_" + kind: node for kind, node in SOURCES.items()}
    prompt["node"] = {"class_type": cls.__name__, "inputs": inputs}
    return prompt


@pytest.mark.parametrize("name", sorted(COMFY))
def test_defaults_validate_and_run(core_registry, graphs, name):
    graphs.put_image("example.png", Image.new("RGBA", (16, 12), (10, 20, 30, 255)))
    cls = core_registry.nodes[name]
    prompt = _default_prompt(cls, graphs.runtime.hook_context)
    checked = graphs.runtime.validate(prompt, targets=["node"])
    assert checked.ok, checked.format()
    result = graphs.run(prompt, targets=["node"], keep=["node"])
    produced = result.values["node"]
    assert len(produced) == len(cls.outputs)
    for out, values in zip(cls.outputs, produced, strict=True):
        if out.type == "IMAGE":
            assert values[0].ndim == 4 and values[0].shape[-1] in (3, 4)
        elif out.type == "MASK":
            assert values[0].ndim == 3
    if cls.output_node:
        assert result.outputs["node"]["images"]


# -- every registered node ---------------------------------------------------------------------


def _builtin_packs() -> tuple[str, ...]:
    """Every node pack the project installs (its ``nodeloom.plugins`` entry points under ``nodes.``)."""
    from importlib.metadata import entry_points

    return tuple(sorted(ep.value for ep in entry_points(group="nodeloom.plugins") if ep.value.startswith("nodes.")))


BUILTIN_PACKS = _builtin_packs()


@pytest.fixture(scope="module")
def every_registry() -> NodeRegistry:
    """The built-in packs and the example plugin, loaded as the command line loads them."""
    registry = load_registry(builtins=BUILTIN_PACKS, plugin_dirs=[PLUGINS],
                             entry_points=False)
    problems = {p.name: p.error or p.skipped for p in registry.plugins if p.status != "loaded" or p.skipped}
    assert not problems, problems
    return registry


def _every_node() -> list[str]:
    registry = load_registry(builtins=BUILTIN_PACKS, plugin_dirs=[PLUGINS],
                             entry_points=False)
    return sorted(registry.nodes)


@pytest.fixture
def stocked(tmp_path: Path, every_registry: NodeRegistry) -> HookContext:
    """Folders holding one file for every models folder a node picks from, and an input image."""
    folders = FolderPaths(base=tmp_path)
    for cls in every_registry.nodes.values():
        for spec in cls.inputs:
            if spec.model_folder is None:
                continue
            folder = folders.models_roots[0] / spec.model_folder
            if spec.model_folder in DIRECTORY_MARKERS:  # a model folder, listed by its marker file
                (folder / "contract").mkdir(parents=True, exist_ok=True)
                for marker in DIRECTORY_MARKERS[spec.model_folder]:
                    (folder / "contract" / marker).write_text("{}")
            else:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "contract.safetensors").write_bytes(b"")
                if spec.model_folder == "face_detectors":  # YOLO files are .pt
                    (folder / "contract.pt").write_bytes(b"")
                if spec.model_folder in MIXED_MARKERS:  # and a model folder beside the files
                    (folder / "contract_folder").mkdir(exist_ok=True)
                    (folder / "contract_folder" / MIXED_MARKERS[spec.model_folder]).write_text("{}")
    # Nodes whose weights have fixed names (annotators).
    for cls in every_registry.nodes.values():
        if getattr(cls, "file_name", ""):
            annotators = folders.models_roots[0] / "annotators"
            annotators.mkdir(parents=True, exist_ok=True)
            (annotators / cls.file_name).write_bytes(b"")
    assert folders.input_dir is not None
    folders.input_dir.mkdir(parents=True)
    Image.new("RGBA", (16, 12), (10, 20, 30, 255)).save(folders.input_dir / "example.png")
    captioned = folders.input_dir / "captioned"  # a dataset folder (kohya sidecar caption)
    captioned.mkdir()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(captioned / "one.png")
    (captioned / "one.txt").write_text("a caption")
    (folders.input_dir / "prompts.txt").write_text("a prompt\n")  # LoadPromptSet
    (folders.input_dir / "image_set").mkdir()  # LoadImageSet
    Image.new("RGB", (16, 12)).save(folders.input_dir / "image_set" / "0.png")
    return HookContext(folders=folders)


def test_every_pack_is_covered(every_registry):
    packs = {"nodes.core", "nodes.diffusion", "nodes.slam", "nodes.control", "nodes.upscale", "nodes.detail",
             "nodes.scoring", "nodes.evaluation", "nodes.training", "nodes.demo"}
    assert packs <= set(BUILTIN_PACKS)
    assert {*packs, "plugins.example_plugin"} <= set(every_registry.origin.values())


@pytest.mark.parametrize("name", _every_node())
def test_schema_round_trips_and_states_the_declaration(every_registry, stocked, name):
    cls = every_registry.nodes[name]
    schema = node_schema(cls, stocked)
    assert json.loads(json.dumps(schema)) == schema  # plain JSON, as /object_info sends it
    visible = [spec for spec in cls.inputs if not spec.hidden]
    assert schema["input_order"].get("required", []) == [s.name for s in visible if not s.optional]
    assert schema["input_order"].get("optional", []) == [s.name for s in visible if s.optional]
    for spec in visible:
        entry = schema["input"]["optional" if spec.optional else "required"][spec.name]
        if spec.type == "COMBO":
            assert isinstance(entry[0], list) and all(isinstance(c, str) for c in entry[0])
        else:
            assert entry[0] == spec.type and spec.type in every_registry.types
    assert schema["output"] == [out.type for out in cls.outputs]
    assert all(t in every_registry.types for out in cls.outputs for t in out.type.split(","))
    assert schema["long_running"] is cls.long_running
    assert schema["description"], f"{name} has no description"


def _sources(registry: NodeRegistry) -> dict[str, type[Node]]:
    """One source node per link type, so a node's links can be fed for validation."""
    sources: dict[str, type[Node]] = {}
    for index, kind in enumerate(sorted(registry.types)):
        sources[kind] = type(f"ContractSource{index}", (Node,), {
            "outputs": [Output(kind)], "run": lambda self, ctx: (None,), "__module__": __name__})
    return sources


@pytest.mark.parametrize("name", _every_node())
def test_defaults_validate(every_registry, stocked, name):
    cls = every_registry.nodes[name]
    registry = NodeRegistry()
    for other in every_registry.nodes.values():
        registry.add_node(other)
    prompt: dict = {}
    inputs = {}
    sources = _sources(every_registry)
    for spec in cls.inputs:
        if spec.hidden or spec.optional:
            continue
        if spec.is_widget:
            choices = spec.current_choices(stocked)
            inputs[spec.name] = spec.default if spec.default is not None else choices[0]
        else:
            source = sources[spec.type.split(",")[0]]
            registry.add_node(source)
            prompt[f"src_{spec.name}"] = {"class_type": source.__name__, "inputs": {}}
            inputs[spec.name] = [f"src_{spec.name}", 0]
    prompt["node"] = {"class_type": name, "inputs": inputs}
    checked = validate(prompt, registry, ctx=stocked, targets=["node"])
    if name == "BBoxDetectYOLO" and importlib.util.find_spec("ultralytics") is None:
        assert not checked.ok and "pip install ultralytics" in checked.format()  # says how to get it
        return
    assert checked.ok, checked.format()
