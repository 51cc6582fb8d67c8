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
