"""ControlNetLoader: every layout of the same ControlNet gives the same network; adapters, SDXL
folders and bad files."""

from __future__ import annotations

import pytest
import torch

from graph_runtime.folders import MissingModelFile
from nodes.control.loading import infer_controlnet_config, layout_of, read_control
from nodes.control.nodes_loaders import ControlNetLoader, control_files
from nodes.infra.files import ModelFileError
from nodes.infra.model_manager import manager_from


def _net(ctx, name):
    value = ControlNetLoader().run(ctx, control_net_name=name)[0]
    return value, manager_from(ctx.services).ensure_loaded(value.ref)


def _residuals(net, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randn(2, 4, 8, 8, generator=gen)
    text = torch.randn(2, 77, net.config.cross_attention_dim, generator=gen)
    hint = torch.rand(2, 3, 64, 64, generator=gen)
    down, mid = net(sample, torch.tensor(500), encoder_hidden_states=text, controlnet_cond=hint, return_dict=False)
    return [*down, mid]


def test_original_layout_file_is_the_diffusers_controlnet(make_ctx) -> None:
    ctx = make_ctx()
    _, diffusers_net = _net(ctx, "tiny-controlnet-sd15.safetensors")
    value, original_net = _net(ctx, "tiny-controlnet-sd15-original.safetensors")
    assert value.kind == "controlnet" and value.cross_attention_dim == 32
    a, b = diffusers_net.state_dict(), original_net.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for x, y in zip(_residuals(diffusers_net), _residuals(original_net)):
        assert torch.equal(x, y)


def test_fp16_pruned_file_matches_within_fp16_rounding(make_ctx) -> None:
    ctx = make_ctx()
    _, reference = _net(ctx, "tiny-controlnet-sd15.safetensors")
    _, pruned = _net(ctx, "tiny-controlnet-sd15-fp16-pruned.safetensors")
    for x, y in zip(_residuals(reference), _residuals(pruned)):
        assert (x - y).abs().max() <= 2e-2 * x.abs().max().clamp_min(1e-3)


def test_sdxl_folder_and_adapter_folder_load(make_ctx) -> None:
    ctx = make_ctx()
    sdxl, net = _net(ctx, "tiny-controlnet-sdxl")
    assert sdxl.kind == "controlnet" and net.config.addition_embed_type == "text_time"
    adapter, module = _net(ctx, "tiny-t2i-adapter-sd15")
    assert adapter.kind == "t2i_adapter" and type(module).__name__ == "T2IAdapter"


def test_shapes_give_the_config_except_heads_from_the_sidecar(zoo_root) -> None:
    _, stored, sd = read_control(zoo_root / "controlnet" / "tiny-controlnet-sd15.safetensors")
    inferred = infer_controlnet_config(sd)
    for key in ("block_out_channels", "layers_per_block", "down_block_types", "cross_attention_dim",
                "conditioning_embedding_out_channels", "in_channels", "use_linear_projection"):
        def plain(v):
            return list(v) if isinstance(v, (list, tuple)) else v

        assert plain(inferred[key]) == plain(stored[key]), key
    # Without a sidecar, the published rule: 64-channel heads for a non-SD1 text width.
    assert inferred["attention_head_dim"] == [1, 1]
    sidecar = {"model": {"params": {"control_stage_config": {"params": {"num_heads": 4}}}}}
    assert infer_controlnet_config(sd, sidecar)["attention_head_dim"] == stored["attention_head_dim"] == 4


def test_choices_list_files_and_diffusers_folders(folders) -> None:
    choices = control_files(type("Ctx", (), {"folders": folders})())
    assert {"tiny-controlnet-sd15.safetensors", "tiny-controlnet-sd15-original.safetensors",
            "tiny-controlnet-sdxl", "tiny-t2i-adapter-sd15"} <= set(choices)
    assert not any(c.startswith("tiny-controlnet-sdxl/") for c in choices)


def test_a_checkpoint_is_not_a_controlnet(make_ctx, zoo_root, tmp_path) -> None:
    from nodes.infra.files import read_state_dict

    sd, _ = read_state_dict(zoo_root / "vae" / "tiny-vae.safetensors")
    with pytest.raises(ModelFileError, match="not a ControlNet or T2I-Adapter"):
        layout_of(sd)
    with pytest.raises(MissingModelFile, match="controlnet"):
        ControlNetLoader().run(make_ctx(), control_net_name="missing.safetensors")


def _copy_original(zoo_root, tmp_path, keep=lambda key: True, sidecar: str | None = None):
    from nodes.infra.files import read_state_dict, save_safetensors

    sd, metadata = read_state_dict(zoo_root / "controlnet" / "tiny-controlnet-sd15-original.safetensors")
    path = tmp_path / "odd.safetensors"
    save_safetensors({k: v for k, v in sd.items() if keep(k)}, path, metadata)
    if sidecar is not None:
        path.with_suffix(".yaml").write_text(sidecar)
    return path


@pytest.mark.parametrize(("keep", "sidecar", "reason"), [
    (lambda k: "attn2" not in k, None, "incomplete ControlNet: no cross-attention"),
    (lambda k: "input_blocks" not in k, None, "incomplete ControlNet: no 'conv_in.weight'"),
    (lambda k: True, "model: [unclosed\n  - :", "cannot read the sidecar config odd.yaml: .*line"),
    (lambda k: True, "model:\n  params:\n    control_stage_config:\n      params:\n        num_heads: abc\n",
     "num_heads is 'abc', not a whole number"),
    (lambda k: True, "model:\n  params:\n    control_stage_config:\n      params:\n        num_heads: 7\n",
     "do not fit a ControlNetModel built from its config \\(size mismatch for"),
])
def test_broken_files_and_sidecars_are_model_file_errors(zoo_root, tmp_path, keep, sidecar, reason) -> None:
    from nodes.control.loading import build

    path = _copy_original(zoo_root, tmp_path, keep, sidecar)
    with pytest.raises(ModelFileError, match=f"odd.safetensors: .*{reason}"):
        build(*read_control(path), name=path.name)


def test_a_sidecar_of_another_shape_is_ignored(zoo_root, tmp_path) -> None:
    for text in ("- a\n- b\n", "model:\n  params: hello\n"):
        kind, config, _ = read_control(_copy_original(zoo_root, tmp_path, sidecar=text))
        assert kind == "controlnet" and config["attention_head_dim"] == [1, 1]


@pytest.mark.parametrize(("text", "reason"), [("{nope", "is not valid JSON"), ("[1]", "holds a JSON list, not an object")])
def test_bad_json_configs_are_model_file_errors(zoo_root, tmp_path, text, reason) -> None:
    import shutil

    from nodes.infra.files import read_state_dict, save_safetensors

    folder = tmp_path / "folder"
    shutil.copytree(zoo_root / "controlnet" / "tiny-controlnet-sdxl", folder)
    (folder / "config.json").write_text(text)
    with pytest.raises(ModelFileError, match=f"folder/config.json {reason}"):
        read_control(folder)
    sd, _ = read_state_dict(zoo_root / "controlnet" / "tiny-controlnet-sd15.safetensors")
    save_safetensors(sd, tmp_path / "meta.safetensors", {"nodeloom_config": text})
    with pytest.raises(ModelFileError, match=f"meta.safetensors: the nodeloom_config metadata {reason}"):
        read_control(tmp_path / "meta.safetensors")


def test_nan_weights_are_a_damaged_file_not_a_black_image(zoo_root, tmp_path) -> None:
    from nodes.infra.files import read_state_dict, save_safetensors

    sd, _ = read_state_dict(zoo_root / "controlnet" / "tiny-controlnet-sd15.safetensors")
    key = next(k for k in sorted(sd) if sd[k].is_floating_point())
    sd[key] = torch.full_like(sd[key], float("nan"))
    path = save_safetensors(sd, tmp_path / "nan.safetensors")
    with pytest.raises(ModelFileError, match=f"nan.safetensors: 1 weight tensor\\(s\\) hold NaN .*{key}"):
        read_control(path)
