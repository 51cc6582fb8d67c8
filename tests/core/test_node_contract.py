"""The contract every registered core node keeps: ComfyUI's schema shape, names, input order,
category and outputs; its defaults pass validation; it runs on them."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from graph_runtime import validate
from graph_runtime.schema import node_schema

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
def test_schema_matches_comfyui(core_registry, name):
    cls = core_registry.nodes[name]
    schema = node_schema(cls)
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
def test_input_specs_have_comfy_shape(core_registry, name):
    for spec in core_registry.nodes[name].inputs:
        if spec.hidden:
            continue
        entry = spec.schema()
        assert isinstance(entry, list) and len(entry) in (1, 2)
        if spec.type == "COMBO":
            assert all(isinstance(choice, str) for choice in entry[0])
        else:
            assert entry[0] == spec.type and spec.type in core_registry.types
        options = entry[1] if len(entry) == 2 else {}
        assert isinstance(options, dict)
        if spec.is_widget and spec.type != "COMBO":
            assert "default" in options, f"{name}.{spec.name} has no default"


def _default_prompt(cls) -> dict:
    inputs = {}
    for spec in cls.inputs:
        if spec.hidden or spec.optional:
            continue
        if spec.is_widget:
            inputs[spec.name] = spec.default if spec.default is not None else spec.current_choices()[0]
        else:
            inputs[spec.name] = ["src_" + spec.type, 0]
    prompt = {"src_" + kind: node for kind, node in SOURCES.items()}
    prompt["node"] = {"class_type": cls.__name__, "inputs": inputs}
    return prompt


@pytest.mark.parametrize("name", sorted(COMFY))
def test_defaults_validate_and_run(core_registry, graphs, name):
    graphs.put_image("example.png", Image.new("RGBA", (16, 12), (10, 20, 30, 255)))
    cls = core_registry.nodes[name]
    prompt = _default_prompt(cls)
    checked = validate(prompt, core_registry, targets=["node"])
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
