"""Loading, saving and previewing image files, as ComfyUI does."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from graph_runtime import WorkflowInvalid
from nodes.core.imaging import InvalidFilenamePrefix, expand_prefix, save_target

UI_WORKFLOW = {"last_node_id": 2, "nodes": [{"id": 1, "type": "EmptyImage"}], "links": [],
               "version": 0.4, "extra": {"note": "ünïcode"}}


def node(class_type: str, **inputs):
    return {"class_type": class_type, "inputs": inputs}


def save_prompt(color: int = 0x3366CC, prefix: str = "shot", batch: int = 1):
    return {"1": node("EmptyImage", width=8, height=6, batch_size=batch, color=color),
            "2": node("SaveImage", images=["1", 0], filename_prefix=prefix)}


def test_save_then_load_round_trip_with_embedded_workflow(graphs):
    prompt = save_prompt(batch=2)
    result = graphs.run(prompt, extra_data={"extra_pnginfo": {"workflow": UI_WORKFLOW}})
    images = result.outputs["2"]["images"]
    assert images == [{"filename": "shot_00001_.png", "subfolder": "", "type": "output"},
                      {"filename": "shot_00002_.png", "subfolder": "", "type": "output"}]
    path = graphs.folders.output_dir / "shot_00001_.png"
    with Image.open(path) as saved:
        assert saved.size == (8, 6) and saved.mode == "RGB"
        # exactly the chunks ComfyUI writes, so its editor restores the graph from the file
        assert saved.text["prompt"] == json.dumps(prompt)
        assert saved.text["workflow"] == json.dumps(UI_WORKFLOW)
    load = {"3": node("LoadImage", image="shot_00002_.png [output]")}
    loaded = graphs.output(load, "3")
    assert torch.allclose(loaded, torch.tensor([0x33, 0x66, 0xCC]).float().div(255).expand(1, 6, 8, 3))


def test_every_text_chunk_is_strict_json_even_with_nan_in_extra_pnginfo(graphs):
    # Editors write NaN into node properties; Python's json would write it bare, JSON.parse refuses it.
    workflow = {**UI_WORKFLOW, "extra": {"ds": {"scale": float("nan"), "offset": [float("inf"), -float("inf")]}}}
    result = graphs.run(save_prompt(prefix="nan"), extra_data={"extra_pnginfo": {"workflow": workflow, "n": float("nan")}})
    name = result.outputs["2"]["images"][0]["filename"]
    with Image.open(graphs.folders.output_dir / name) as saved:
        texts = dict(saved.text)

    def refuse(token: str) -> None:
        raise ValueError(f"not strict JSON: {token}")

    parsed = {key: json.loads(text, parse_constant=refuse) for key, text in texts.items()}
    assert parsed["workflow"]["extra"]["ds"] == {"scale": None, "offset": [None, None]}
    assert parsed["n"] is None and parsed["workflow"]["nodes"] == UI_WORKFLOW["nodes"]


def test_counter_continues_from_highest_existing_file(graphs):
    graphs.run(save_prompt(color=1))
    graphs.run(save_prompt(color=2))
    (graphs.folders.output_dir / "shot_00041_.png").write_bytes(b"")
    (graphs.folders.output_dir / "shotgun_00099_.png").write_bytes(b"")  # another prefix: ignored
    result = graphs.run(save_prompt(color=3))
    assert result.outputs["2"]["images"][0]["filename"] == "shot_00042_.png"
    names = sorted(p.name for p in graphs.folders.output_dir.iterdir())
    assert names[:3] == ["shot_00001_.png", "shot_00002_.png", "shot_00041_.png"]


def test_prefix_with_subfolders(graphs):
    result = graphs.run(save_prompt(prefix="renders/day1/cat"))
    assert result.outputs["2"]["images"] == [
        {"filename": "cat_00001_.png", "subfolder": "renders/day1", "type": "output"}]
    assert (graphs.folders.output_dir / "renders" / "day1" / "cat_00001_.png").is_file()


def test_prefix_escaping_the_output_folder_is_invalid_naming_it(graphs):
    # A validation error before anything runs (and at a server's submission: the schema says
    # path_in "output"); save_target still refuses it at run time should a caller skip validation.
    result = graphs.runtime.validate(save_prompt(prefix="../../escape"))
    (error,) = result.node_errors
    assert (error.node_id, error.type, error.input_name) == ("2", "invalid_input_value", "filename_prefix")
    assert str(graphs.folders.output_dir) in error.details
    with pytest.raises(InvalidFilenamePrefix, match="outside the folder"):
        save_target("../../escape", graphs.folders.output_dir, 1, 1)
    assert not any(graphs.folders.base.parent.glob("escape*"))


def test_prefix_variables():
    now = time.struct_time((2024, 3, 7, 9, 5, 2, 0, 67, 0))
    assert expand_prefix("%date:yyyy-MM-dd%/img_%width%x%height%", 640, 480, now) == "2024-03-07/img_640x480"
    assert expand_prefix("%year%%month%%day%-%hour%%minute%%second%", 1, 1, now) == "20240307-090502"


def test_preview_writes_to_temp(graphs):
    prompt = {"1": node("EmptyImage", width=4, height=4, batch_size=1, color=0),
              "2": node("PreviewImage", images=["1", 0])}
    (entry,) = graphs.run(prompt).outputs["2"]["images"]
    assert entry["type"] == "temp" and entry["subfolder"] == ""
    assert entry["filename"].startswith("ComfyUI_temp_") and entry["filename"].endswith("_00001_.png")
    assert (graphs.folders.temp_dir / entry["filename"]).is_file()
    assert not graphs.folders.output_dir.exists() or not any(graphs.folders.output_dir.iterdir())


def test_load_image_alpha_becomes_inverted_mask(graphs):
    picture = np.zeros((4, 5, 4), dtype=np.uint8)
    picture[..., 0] = 255
    picture[:, :2, 3] = 255  # left two columns opaque, the rest transparent
    name = graphs.put_image("cutout.png", picture)
    prompt = {"1": node("LoadImage", image=name)}
    image, mask = graphs.output(prompt, "1", 0), graphs.output(prompt, "1", 1)
    assert image.shape == (1, 4, 5, 3)
    assert torch.equal(mask[0, :, :2], torch.zeros(4, 2)) and torch.equal(mask[0, :, 2:], torch.ones(4, 3))


def test_load_image_without_alpha_gives_comfy_empty_mask(graphs):
    name = graphs.put_image("opaque.jpg", Image.new("RGB", (10, 7), (0, 0, 255)))
    mask = graphs.output({"1": node("LoadImage", image=name)}, "1", 1)
    assert mask.shape == (1, 64, 64) and mask.sum() == 0


def test_load_image_applies_exif_orientation(graphs):
    picture = Image.new("RGB", (8, 4), (255, 0, 0))
    picture.paste((0, 255, 0), (0, 0, 2, 2))  # green top-left corner as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90° clockwise to show it upright
    name = graphs.put_image("phone.png", picture, exif=exif)
    image = graphs.output({"1": node("LoadImage", image=name)}, "1")
    assert image.shape == (1, 8, 4, 3)
    assert torch.equal(image[0, :2, 2:], torch.tensor([0.0, 1.0, 0.0]).expand(2, 2, 3))  # now top right
    assert torch.equal(image[0, :2, :2], torch.tensor([1.0, 0.0, 0.0]).expand(2, 2, 3))


def test_load_animated_image_as_batch(graphs):
    frames = [Image.new("RGB", (6, 4), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    name = graphs.put_image("anim.gif", frames[0], save_all=True, append_images=frames[1:], duration=50)
    image = graphs.output({"1": node("LoadImage", image=name)}, "1")
    assert image.shape == (3, 4, 6, 3)
    assert [int(image[i, 0, 0].argmax()) for i in range(3)] == [0, 1, 2]


def test_load_image_choices_list_the_input_folder(graphs, core_registry):
    graphs.put_image("b.png", Image.new("RGB", (2, 2)))
    graphs.put_image("a.webp", Image.new("RGB", (2, 2)))
    (graphs.folders.input_dir / "notes.txt").write_text("not an image")
    spec = core_registry.nodes["LoadImage"].input_spec("image")
    assert spec.schema(graphs.runtime.hook_context) == [["a.webp", "b.png"], {"image_upload": True}]


def test_missing_input_file_is_a_validation_error_naming_the_folder(graphs):
    prompt = {"7": node("LoadImage", image="nowhere.png"),
              "8": node("PreviewImage", images=["7", 0])}
    with pytest.raises(WorkflowInvalid) as raised:
        graphs.runtime.execute(prompt)
    (error,) = raised.value.result.node_errors
    assert error.node_id == "7" and error.class_type == "LoadImage"
    assert "nowhere.png" in error.details and str(graphs.folders.input_dir) in error.details
    assert "nowhere.png" in str(raised.value)


def test_unsafe_image_name_is_rejected(graphs):
    prompt = {"1": node("LoadImage", image="../secret.png"), "2": node("PreviewImage", images=["1", 0])}
    with pytest.raises(WorkflowInvalid, match="secret.png"):
        graphs.runtime.execute(prompt)


def test_changed_file_reruns_load_image(graphs):
    name = graphs.put_image("live.png", Image.new("RGB", (2, 2), (255, 0, 0)))
    prompt = {"1": node("LoadImage", image=name), "2": node("PreviewImage", images=["1", 0])}
    first = graphs.run(prompt, keep=["1"])
    repeat = graphs.run(prompt)
    assert repeat.executed == [] and repeat.cached == ["2"]  # unchanged file: nothing runs again
    graphs.put_image(name, Image.new("RGB", (2, 2), (0, 0, 255)))
    again = graphs.run(prompt, keep=["1"])
    assert again.executed == ["1", "2"]
    assert first.values["1"][0][0][0, 0, 0, 0] == 1.0 and again.values["1"][0][0][0, 0, 0, 2] == 1.0


def test_load_16_bit_grey_png_keeps_its_range(graphs):
    levels = np.array([[0, 32768, 65535]], dtype=np.uint16)
    name = graphs.put_image("deep.png", Image.fromarray(levels))
    image = graphs.output({"1": node("LoadImage", image=name)}, "1")
    assert image.shape == (1, 1, 3, 3)
    assert torch.allclose(image[0, 0, :, 0], torch.tensor([0.0, 32768 / 65535, 1.0]))
    assert torch.equal(image[..., 0], image[..., 2])  # grey: every channel alike
