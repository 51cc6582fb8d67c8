"""UI format (what ComfyUI's editor saves) → API format, with the node schemas."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from graph_runtime import FolderPaths, HookContext, NodeRegistry, parse_workflow, validate
from graph_runtime.formats import WorkflowFormatError
from graph_runtime.ui_format import ui_to_api

DATA = Path(__file__).parent / "data" / "ui"
# The folders computed choices are listed from (these files pick no model files).
CTX = HookContext(FolderPaths(base=DATA))


def load(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def node(node_id: int, kind: str, *, inputs: list[dict[str, Any]] | None = None,
         widgets: Any = None, mode: int = 0, outputs: int = 1, **extra: Any) -> dict[str, Any]:
    entry = {"id": node_id, "type": kind, "mode": mode, "inputs": inputs or [],
             "outputs": [{"name": "out", "type": "*", "links": []} for _ in range(outputs)], **extra}
    if widgets is not None:
        entry["widgets_values"] = widgets
    return entry


def test_v04_file_reroute_primitive_note_muted_bypassed(ui_registry: NodeRegistry) -> None:
    prompt = ui_to_api(load("invert_and_scale_v04.json"), ui_registry, CTX)
    # Reroute (2), PrimitiveNode (6), Note (7), muted PreviewImage (8), bypassed ImageBlur (9) vanish.
    assert sorted(prompt) == ["1", "3", "4", "5"]
    assert prompt["1"]["inputs"] == {"image": "photo.png"}  # the upload button's slot is skipped
    assert prompt["3"]["inputs"] == {"image": ["1", 0]}  # through the reroute to LoadImage
    assert prompt["4"]["inputs"] == {"image": ["3", 0], "upscale_method": "bilinear",
                                     "width": 768, "height": 256, "crop": "center"}
    # The bypassed blur hands its IMAGE input straight to SaveImage.
    assert prompt["5"] == {"class_type": "SaveImage", "_meta": {"title": "Save inverted"},
                           "inputs": {"images": ["4", 0], "filename_prefix": "inverted"}}
    assert validate(prompt, ui_registry, ctx=CTX).ok


def test_v1_file_link_objects_titles_and_markdown_note(ui_registry: NodeRegistry) -> None:
    prompt = ui_to_api(load("blur_invert_v1.json"), ui_registry, CTX)
    assert sorted(prompt) == ["10", "11", "12", "13", "14", "15"]
    assert prompt["11"]["inputs"] == {"image": ["10", 0], "blur_radius": 3, "sigma": 1.5}
    assert prompt["12"]["_meta"]["title"] == "Negative"
    assert prompt["13"]["inputs"] == {"images": ["12", 0], "filename_prefix": "blurred/negative"}
    assert prompt["14"]["inputs"]["width"] == 64 and prompt["14"]["inputs"]["height"] == 32
    result = validate(prompt, ui_registry, ctx=CTX)
    assert result.ok and result.outputs == ["13", "15"]


def test_parse_workflow_keeps_the_ui_document_for_pnginfo(ui_registry: NodeRegistry) -> None:
    document = load("blur_invert_v1.json")
    workflow = parse_workflow(document, ui_registry, ctx=CTX)
    assert workflow.ui_workflow is document
    assert workflow.extra_data["extra_pnginfo"]["workflow"] is document
    with pytest.raises(WorkflowFormatError, match="node schemas"):
        parse_workflow(document)


def sampler_document(widgets: Any, seed_input: dict[str, Any] | None = None) -> dict[str, Any]:
    inputs = [{"name": n, "type": t, "link": None} for n, t in
              (("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
               ("latent_image", "LATENT"))]
    if seed_input:
        inputs.append(seed_input)
    return {"nodes": [node(3, "KSampler", inputs=inputs, widgets=widgets)], "links": [], "version": 0.4}


def test_seed_control_after_generate_takes_one_extra_slot(ui_registry: NodeRegistry) -> None:
    document = sampler_document([156680208700286, "randomize", 20, 8, "euler", "normal", 1])
    inputs = ui_to_api(document, ui_registry, CTX)["3"]["inputs"]
    assert inputs == {"seed": 156680208700286, "steps": 20, "cfg": 8, "sampler_name": "euler",
                      "scheduler": "normal", "denoise": 1}


def test_seed_converted_to_socket_keeps_its_slot_and_primitive_value_wins(ui_registry: NodeRegistry) -> None:
    document = sampler_document([1, "fixed", 30, 6.5, "dpmpp_2m", "karras", 0.75],
                                {"name": "seed", "type": "INT", "link": 9, "widget": {"name": "seed"}})
    document["nodes"].append(node(4, "PrimitiveNode", widgets=[42, "increment"], title="seed"))
    document["links"] = [[9, 4, 0, 3, 4, "INT"]]
    inputs = ui_to_api(document, ui_registry, CTX)["3"]["inputs"]
    assert inputs["seed"] == 42 and inputs["steps"] == 30 and inputs["denoise"] == 0.75


def test_widgets_values_as_dict_and_missing_values_take_defaults(ui_registry: NodeRegistry) -> None:
    document = {"nodes": [
        node(1, "ImageScale", widgets={"width": 100, "height": 50, "unknown": 1, "upscale_method": "area"}),
        node(2, "ImageBlur"),  # saved before its widgets existed: the editor would use defaults
    ], "links": []}
    prompt = ui_to_api(document, ui_registry, CTX)
    assert prompt["1"]["inputs"] == {"width": 100, "height": 50, "upscale_method": "area"}
    assert prompt["2"]["inputs"] == {"blur_radius": 1, "sigma": 1.0}


def test_bypass_picks_the_input_of_the_links_type(ui_registry: NodeRegistry) -> None:
    # A bypassed node whose slot 0 is a MASK: the IMAGE consumer gets the IMAGE input (slot 1).
    document = {"nodes": [
        node(1, "LoadImage", widgets=["photo.png", "image"], outputs=2),
        node(2, "Anything", mode=4, inputs=[{"name": "mask", "type": "MASK", "link": 2},
                                            {"name": "image", "type": "IMAGE", "link": 1}]),
        node(3, "PreviewImage", inputs=[{"name": "images", "type": "IMAGE", "link": 3}]),
    ], "links": [[1, 1, 0, 2, 1, "IMAGE"], [2, 1, 1, 2, 0, "MASK"], [3, 2, 0, 3, 0, "IMAGE"]]}
    prompt = ui_to_api(document, ui_registry, CTX)
    assert prompt["3"]["inputs"] == {"images": ["1", 0]}
    assert "2" not in prompt  # bypassed nodes need no schema


def test_link_from_a_muted_node_leaves_the_input_missing(ui_registry: NodeRegistry) -> None:
    document = {"nodes": [
        node(1, "LoadImage", widgets=["photo.png", "image"], mode=2),
        node(2, "PreviewImage", inputs=[{"name": "images", "type": "IMAGE", "link": 1}]),
    ], "links": [[1, 1, 0, 2, 0, "IMAGE"]]}
    prompt = ui_to_api(document, ui_registry, CTX)
    assert prompt == {"2": {"class_type": "PreviewImage", "inputs": {}, "_meta": {"title": "PreviewImage"}}}
    errors = validate(prompt, ui_registry, ctx=CTX).node_errors
    assert [(e.node_id, e.type, e.input_name) for e in errors] == [("2", "required_input_missing", "images")]


def test_unknown_node_types_are_all_named(ui_registry: NodeRegistry) -> None:
    document = {"nodes": [node(1, "LoadImage", widgets=["photo.png"]), node(7, "FancyUpscaler"),
                          node(9, "MysteryNode")], "links": []}
    with pytest.raises(WorkflowFormatError) as info:
        ui_to_api(document, ui_registry, CTX)
    message = str(info.value)
    assert "node 7 ('FancyUpscaler')" in message and "node 9 ('MysteryNode')" in message


def test_malformed_documents_give_format_errors(ui_registry: NodeRegistry) -> None:
    with pytest.raises(WorkflowFormatError, match="'id' and a 'type'"):
        ui_to_api({"nodes": [{"id": 1}], "links": []}, ui_registry, CTX)
    with pytest.raises(WorkflowFormatError, match="unreadable link"):
        ui_to_api({"nodes": [], "links": ["nonsense"]}, ui_registry, CTX)


@pytest.mark.parametrize("damage, named", [
    (lambda d: d.update(extra="x"), "'extra' must be an object"),
    (lambda d: d.update(links=5), "'links' must be a list"),
    (lambda d: d.update(definitions={"subgraphs": 3}), "'definitions.subgraphs' must be a list"),
    (lambda d: d["nodes"][2].update(inputs=3), r"node 3 \(ImageInvert\): cannot read"),
    (lambda d: d["nodes"][2]["inputs"][0].update(name=["image"]), r"node 3 \(ImageInvert\): cannot read"),
])
def test_damaged_values_are_format_errors_naming_what_is_wrong(ui_registry: NodeRegistry, damage: Any,
                                                                named: str) -> None:
    """A value of the wrong JSON type anywhere in a saved file is a format error (the CLI's exit 2,
    the server's 400), never an AttributeError or TypeError escaping the conversion."""
    document = load("invert_and_scale_v04.json")
    damage(document)
    with pytest.raises(WorkflowFormatError, match=named):
        ui_to_api(document, ui_registry, CTX)


@pytest.mark.parametrize("damage", [
    lambda d: d["extra"].update(groupNodes=["Prep and sample"]),
    lambda d: d["extra"]["groupNodes"]["Prep and sample"]["links"][1].__setitem__(1, [0]),
    lambda d: d["extra"]["groupNodes"]["Prep and sample"].update(external=[["x", 0, "IMAGE"]]),
    lambda d: d["links"].__setitem__(0, 1.5),
])
def test_damaged_group_nodes_are_format_errors(ui_registry: NodeRegistry, damage: Any) -> None:
    document = load("group_node_v04.json")
    damage(document)
    with pytest.raises(WorkflowFormatError):
        ui_to_api(document, ui_registry, CTX)


def subgraph_document() -> dict[str, Any]:
    """A v1 workflow whose node 20 is an instance of a subgraph (blur then invert) with one IMAGE
    input, one IMAGE output and the blur radius promoted as a widget."""
    definition = {
        "id": "a1b2c3d4-0000-4000-8000-000000000001", "name": "Blur and invert",
        "inputs": [{"id": "in-0", "name": "image", "type": "IMAGE", "linkIds": [1]},
                   {"id": "in-1", "name": "blur_radius", "type": "INT", "linkIds": [4]}],
        "outputs": [{"id": "out-0", "name": "IMAGE", "type": "IMAGE", "linkIds": [3]}],
        "nodes": [
            node(1, "ImageBlur", widgets=[2, 1.0], inputs=[
                {"name": "image", "type": "IMAGE", "link": 1},
                {"name": "blur_radius", "type": "INT", "link": 4, "widget": {"name": "blur_radius"}}]),
            node(2, "ImageInvert", inputs=[{"name": "image", "type": "IMAGE", "link": 2}]),
        ],
        "links": [
            {"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "IMAGE"},
            {"id": 2, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "IMAGE"},
            {"id": 3, "origin_id": 2, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "IMAGE"},
            {"id": 4, "origin_id": -10, "origin_slot": 1, "target_id": 1, "target_slot": 1, "type": "INT"},
        ],
    }
    return {
        "version": 1, "state": {"lastNodeId": 21, "lastLinkId": 6},
        "nodes": [
            node(10, "LoadImage", widgets=["photo.png", "image"], outputs=2),
            node(20, definition["id"], widgets=[9], inputs=[
                {"name": "image", "type": "IMAGE", "link": 5},
                {"name": "blur_radius", "type": "INT", "link": None, "widget": {"name": "blur_radius"}}]),
            node(21, "SaveImage", widgets=["sub"], inputs=[{"name": "images", "type": "IMAGE", "link": 6}]),
        ],
        "links": [
            {"id": 5, "origin_id": 10, "origin_slot": 0, "target_id": 20, "target_slot": 0, "type": "IMAGE"},
            {"id": 6, "origin_id": 20, "origin_slot": 0, "target_id": 21, "target_slot": 0, "type": "IMAGE"},
        ],
        "definitions": {"subgraphs": [definition]},
    }


def test_subgraph_is_flattened_with_colon_ids(ui_registry: NodeRegistry) -> None:
    prompt = ui_to_api(subgraph_document(), ui_registry, CTX)
    assert sorted(prompt) == ["10", "20:1", "20:2", "21"]
    # The promoted widget's value on the instance (9) wins over the interior default (2).
    assert prompt["20:1"]["inputs"] == {"image": ["10", 0], "blur_radius": 9, "sigma": 1.0}
    assert prompt["20:2"]["inputs"] == {"image": ["20:1", 0]}
    assert prompt["21"]["inputs"] == {"images": ["20:2", 0], "filename_prefix": "sub"}
    assert validate(prompt, ui_registry, ctx=CTX).ok


def test_subgraph_containing_itself_is_a_format_error(ui_registry: NodeRegistry) -> None:
    document = subgraph_document()
    definition = document["definitions"]["subgraphs"][0]
    definition["nodes"].append(node(3, definition["id"]))
    with pytest.raises(WorkflowFormatError, match="nested more than"):
        ui_to_api(document, ui_registry, CTX)


def test_conversion_does_not_modify_the_document(ui_registry: NodeRegistry) -> None:
    document = load("invert_and_scale_v04.json")
    before = copy.deepcopy(document)
    ui_to_api(document, ui_registry, CTX)
    assert document == before


def test_real_core_nodes_convert_the_same_files() -> None:
    """Against the real core image nodes, once their pack is present."""
    from graph_runtime import load_registry

    registry = load_registry(builtins=("nodes.core",), entry_points=False)
    needed = {"LoadImage", "ImageScale", "ImageInvert", "SaveImage", "PreviewImage"}
    if not needed <= set(registry.nodes):
        pytest.skip("nodes.core does not provide the core image nodes yet")
    prompt = ui_to_api(load("invert_and_scale_v04.json"), registry, CTX)
    assert prompt["4"]["inputs"]["width"] == 768 and prompt["5"]["inputs"]["images"] == ["4", 0]
    assert prompt["1"]["inputs"]["image"] == "photo.png"


def test_comfyui_default_workflow_with_the_2023_boolean_seed_control() -> None:
    from graph_runtime import load_registry

    registry = load_registry(builtins=("nodes.core", "nodes.diffusion"), entry_points=False)
    prompt = ui_to_api(load("comfyui_default_2023_v04.json"), registry, CTX)
    assert prompt["3"]["inputs"] == {"model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                                     "latent_image": ["5", 0], "seed": 156680208700286, "steps": 20, "cfg": 8,
                                     "sampler_name": "euler", "scheduler": "normal", "denoise": 1}
    assert prompt["5"]["inputs"] == {"width": 512, "height": 512, "batch_size": 1}
    assert prompt["9"]["inputs"] == {"images": ["8", 0], "filename_prefix": "ComfyUI"}


def test_upload_and_control_slots_in_every_saved_form(ui_registry: NodeRegistry) -> None:
    prompt = ui_to_api(load("upload_and_control_slots_v04.json"), ui_registry, CTX)
    # The upload button's slot follows the last required widget, not the image.
    assert prompt["1"]["inputs"] == {"image": "photo.png", "channel": "alpha"}
    assert prompt["2"]["inputs"] == {"image": "photo.png", "channel": "red"}
    assert prompt["3"]["inputs"] == prompt["4"]["inputs"] == {"image": "photo.png"}
    # A COMBO's control word, with or without the filter text older frontends saved after it.
    assert prompt["5"]["inputs"] == {"ckpt_name": "b.safetensors", "strength": 0.5}
    assert prompt["6"]["inputs"] == {"ckpt_name": "b.safetensors", "strength": 0.75}
    assert validate(prompt, ui_registry, ctx=CTX).node_errors == []


def test_boolean_seed_control_in_a_v1_sampler(ui_registry: NodeRegistry) -> None:
    for control in (True, False, "increment-wrap"):
        document = sampler_document([7, control, 12, 4.5, "dpmpp_2m", "karras", 0.5])
        inputs = ui_to_api(document, ui_registry, CTX)["3"]["inputs"]
        assert inputs == {"seed": 7, "steps": 12, "cfg": 4.5, "sampler_name": "dpmpp_2m",
                          "scheduler": "karras", "denoise": 0.5}


def test_widgets_values_named_wins_over_positions(ui_registry: NodeRegistry) -> None:
    document = sampler_document([0, "fixed", 1, 1.0, "euler", "normal", 1.0])  # stale positional copy
    document["nodes"][0]["widgets_values_named"] = {"seed": 7, "control_after_generate": "fixed", "steps": 12,
                                                    "cfg": 4.5, "sampler_name": "dpmpp_2m",
                                                    "scheduler": "karras", "denoise": 0.5}
    inputs = ui_to_api(document, ui_registry, CTX)["3"]["inputs"]
    assert inputs == {"seed": 7, "steps": 12, "cfg": 4.5, "sampler_name": "dpmpp_2m", "scheduler": "karras",
                      "denoise": 0.5}


def test_legacy_group_nodes_expand_as_the_frontend_did(ui_registry: NodeRegistry) -> None:
    prompt = ui_to_api(load("group_node_v04.json"), ui_registry, CTX)
    assert sorted(prompt) == ["1", "10:0", "10:1", "10:2", "10:3", "11", "12",
                              "20:0", "20:1", "20:2", "20:3"]  # the PrimitiveNode (10:4) only feeds a value
    assert prompt["10:0"]["inputs"] == {"image": ["1", 0], "upscale_method": "bilinear", "width": 96,
                                        "height": 64, "crop": "center"}
    assert prompt["10:1"]["inputs"] == {"image": ["10:0", 0], "blur_radius": 3, "sigma": 1.5}
    assert prompt["10:2"]["inputs"] == {"image": "photo.png"}  # the group's upload slot skipped
    assert prompt["10:3"]["inputs"] == {"seed": 7, "steps": 12, "cfg": 6.5, "sampler_name": "euler",
                                        "scheduler": "karras", "denoise": 0.6}
    # The group node's outputs: ImageBlur's (ImageScale's is used inside), then LoadImage's.
    assert prompt["11"]["inputs"]["images"] == ["10:1", 0] and prompt["12"]["inputs"] == {"images": ["10:2", 0]}
    # A second instance (the "workflow/" separator of older files; a 2023 boolean seed control).
    assert prompt["20:3"]["inputs"] == {"seed": 9, "steps": 4, "cfg": 2.0, "sampler_name": "dpmpp_2m",
                                        "scheduler": "normal", "denoise": 1.0}
    assert prompt["20:1"]["inputs"] == {"image": ["20:0", 0], "blur_radius": 5, "sigma": 0.5}
    assert "image" not in prompt["20:0"]["inputs"]  # its group input is not connected
    result = validate(prompt, ui_registry, ctx=CTX, targets=["11", "12"])
    assert result.ok, result.format()


def test_group_node_without_a_definition_or_with_an_unknown_inner_type(ui_registry: NodeRegistry) -> None:
    document = load("group_node_v04.json")
    document["extra"]["groupNodes"] = {}
    with pytest.raises(WorkflowFormatError, match="group node 10 .*no definition of group 'Prep and sample'"):
        ui_to_api(document, ui_registry, CTX)
    document = load("group_node_v04.json")
    document["extra"]["groupNodes"]["Prep and sample"]["nodes"][0]["type"] = "FancyScale"
    with pytest.raises(WorkflowFormatError, match="group 'Prep and sample': no loaded plugin provides .*FancyScale"):
        ui_to_api(document, ui_registry, CTX)
