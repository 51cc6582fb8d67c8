"""CheckpointSave: the file is in the original single-file layout, reloads through
CheckpointLoaderSimple with every weight equal (patches included) and samples the same."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from graph_runtime.folders import FolderPaths
from nodes.diffusion.nodes_conditioning import CLIPTextEncode
from nodes.diffusion.nodes_latent import EmptyLatentImage
from nodes.diffusion.nodes_loaders import LoraLoader
from nodes.diffusion.nodes_sampling import KSampler
from nodes.infra.files import METADATA_KEY, save_safetensors
from nodes.infra.model_manager import manager_from
from nodes.training.checkpoint_save import CheckpointSave
from nodes.training.merge import FuseModelsLayerwise

from tests.training.merge_helpers import load, make_ctx, weights  # noqa: F401

PREFIXES = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.", "conditioner.embedders.")


def save(ctx, model, clip, vae, prefix: str = "checkpoints/ComfyUI") -> Path:
    text = CheckpointSave().run(ctx, model=model, clip=clip, vae=vae, filename_prefix=prefix,
                                prompt={"1": {"class_type": "CheckpointSave"}}).ui["text"][0]
    return ctx.folders.directory_for("output") / text.removeprefix("saved ")


def reload(make_ctx, path: Path, tmp_path: Path, zoo_root: Path):
    """The file loaded by CheckpointLoaderSimple from a models folder of its own (a fresh manager)."""
    root = tmp_path / "models"
    (root / "checkpoints").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, root / "checkpoints" / path.name)
    ctx = make_ctx(base_folders=FolderPaths(base=tmp_path, models_roots=[root, zoo_root]))
    ctx.services = type(ctx.services)()  # nothing shared with the saving run
    return ctx, load(ctx, path.name)


def encoder_weights(ctx, clip) -> list[dict[str, torch.Tensor]]:
    from nodes.diffusion.lora import patched

    manager = manager_from(ctx.services)
    with manager.use(*clip.refs) as encoders:
        out = []
        for encoder, patches in zip(encoders, clip.patches or [() for _ in encoders]):
            with patched(encoder, patches):
                out.append({k: v.clone() for k, v in encoder.state_dict().items()})
        return out


def sample(ctx, model, clip) -> torch.Tensor:
    latent = EmptyLatentImage().run(ctx, width=64, height=64, batch_size=1)[0]
    positive = CLIPTextEncode().run(ctx, text="a red mug", clip=clip)[0]
    negative = CLIPTextEncode().run(ctx, text="blurry", clip=clip)[0]
    return KSampler().run(ctx, model=model, seed=7, steps=3, cfg=5.0, sampler_name="euler", scheduler="normal",
                          positive=positive, negative=negative, latent_image=latent, denoise=1.0)[0]["samples"]


def test_fused_model_with_lora_saves_reloads_equal_and_samples_the_same(make_ctx, tmp_path, zoo_root) -> None:
    ctx = make_ctx()
    model, clip, vae = load(ctx, "tiny-sd15.safetensors")
    tuned, tuned_clip = LoraLoader().run(ctx, model=model, clip=clip, lora_name="tiny-sd15-kohya.safetensors",
                                         strength_model=1.0, strength_clip=0.7).outputs
    (fused,) = FuseModelsLayerwise().run(ctx, base=model, fine_tuned=tuned, block_weights="up_blocks.*.attentions: 0.8",
                                         default_weight=0.3)
    path = save(ctx, fused, tuned_clip, vae)
    assert path.parent == ctx.folders.directory_for("output") / "checkpoints" and path.name == "ComfyUI_00001_.safetensors"
    with safe_open(str(path), "pt") as f:
        keys, metadata = list(f.keys()), f.metadata()
    assert all(k.startswith(PREFIXES) for k in keys)
    assert "model.diffusion_model.input_blocks.1.1.proj_in.weight" in keys
    assert "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight" in keys
    assert json.loads(metadata["prompt"]) == {"1": {"class_type": "CheckpointSave"}}

    ctx2, (model2, clip2, vae2) = reload(make_ctx, path, tmp_path, zoo_root)
    saved_unet, loaded_unet = weights(ctx, fused), weights(ctx2, model2)
    assert saved_unet.keys() == loaded_unet.keys()
    assert all(torch.equal(saved_unet[k], loaded_unet[k]) for k in saved_unet)
    for before, after in zip(encoder_weights(ctx, tuned_clip), encoder_weights(ctx2, clip2)):
        assert all(torch.equal(before[k], after[k]) for k in before)
    with vae.use(manager_from(ctx.services)) as a, vae2.use(manager_from(ctx2.services)) as b:
        assert all(torch.equal(x, b.state_dict()[k]) for k, x in a.state_dict().items())
    assert torch.equal(sample(ctx, fused, tuned_clip), sample(ctx2, model2, clip2))
    # The next save of the same prefix counts on, as ComfyUI's.
    assert save(ctx, fused, tuned_clip, vae).name == "ComfyUI_00002_.safetensors"


@pytest.mark.parametrize("ckpt", ["tiny-sdxl.safetensors", "tiny-sd2-v.safetensors"])
def test_other_families_reload_equal(make_ctx, tmp_path, zoo_root, ckpt: str) -> None:
    ctx = make_ctx()
    model, clip, vae = load(ctx, ckpt)
    path = save(ctx, model, clip, vae, prefix=f"checkpoints/{ckpt.split('.')[0]}")
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
    assert all(k.startswith(PREFIXES) for k in keys)
    ctx2, (model2, clip2, _) = reload(make_ctx, path, tmp_path, zoo_root)
    assert model2.scheduler_config["prediction_type"] == model.scheduler_config["prediction_type"]
    before, after = weights(ctx, model), weights(ctx2, model2)
    assert all(torch.equal(before[k], after[k]) for k in before)
    for a, b in zip(encoder_weights(ctx, clip), encoder_weights(ctx2, clip2)):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_layout_loads_without_our_metadata(make_ctx, tmp_path, zoo_root) -> None:
    """ComfyUI and A1111 read only the keys: without nodeloom_config the shapes give the architecture."""
    ctx = make_ctx()
    model, clip, vae = load(ctx, "tiny-sd15.safetensors")
    path = save(ctx, model, clip, vae)
    with safe_open(str(path), "pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
        assert METADATA_KEY in f.metadata()
    bare = save_safetensors(state, tmp_path / "bare" / "bare.safetensors")
    ctx2, (model2, _, _) = reload(make_ctx, bare, tmp_path, zoo_root)
    before, after = weights(ctx, model), weights(ctx2, model2)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_prefix_outside_the_output_folder_is_refused(make_ctx) -> None:
    ctx = make_ctx()
    model, clip, vae = load(ctx, "tiny-sd15.safetensors")
    with pytest.raises(ValueError, match="would save outside the folder"):
        save(ctx, model, clip, vae, prefix="../../escape")
