"""Model files: single-file vs diffusers folder, shape inference, safe and clear loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from nodes.diffusion.checkpoint import ModelFileError, detect_family, load_checkpoint, load_diffusers_folder, read_state_dict


def _tok(zoo_root: Path):
    return lambda name: zoo_root / "clip_tokenizer" / name


def _same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", ["tiny-sd15", "tiny-sdxl"])
def test_single_file_and_diffusers_folder_give_identical_weights(zoo_root: Path, name: str) -> None:
    single = load_checkpoint(zoo_root / "checkpoints" / f"{name}.safetensors", tokenizer_root=_tok(zoo_root))
    folder = load_diffusers_folder(zoo_root / "diffusers" / name)
    assert single.family == folder.family == name.split("-")[1]
    _same(single.unet, folder.unet)
    _same(single.vae, folder.vae)
    assert len(single.text_encoders) == len(folder.text_encoders)
    for a, b in zip(single.text_encoders, folder.text_encoders):
        _same(a, b)


@pytest.mark.parametrize("name", ["tiny-sd15", "tiny-sdxl"])
def test_architecture_inferred_from_shapes_without_metadata(zoo_root: Path, tmp_path: Path, name: str) -> None:
    """A file with no config (like real checkpoints of non-standard sizes) still loads."""
    bare = tmp_path / f"{name}.safetensors"
    save_file(load_file(str(zoo_root / "checkpoints" / f"{name}.safetensors")), str(bare))
    comp = load_checkpoint(bare, tokenizer_root=_tok(zoo_root))
    ref = load_diffusers_folder(zoo_root / "diffusers" / name)
    _same(comp.unet, ref.unet)
    _same(comp.vae, ref.vae)
    assert comp.unet.config.block_out_channels == ref.unet.config.block_out_channels


def test_detect_family_from_keys() -> None:
    assert detect_family(["cond_stage_model.transformer.text_model.x", "model.diffusion_model.input_blocks.0.0.weight"]) == "sd15"
    assert detect_family(["cond_stage_model.model.transformer.resblocks.0.ln_1.weight"]) == "sd21"
    assert detect_family(["conditioner.embedders.0.transformer.a", "conditioner.embedders.1.model.b"]) == "sdxl"
    with pytest.raises(ModelFileError, match="not a Stable Diffusion checkpoint"):
        detect_family(["foo.weight"])


def test_truncated_file_is_a_clear_error(zoo_root: Path, tmp_path: Path) -> None:
    data = (zoo_root / "vae" / "tiny-vae.safetensors").read_bytes()
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="broken.safetensors.*truncated or corrupt"):
        read_state_dict(broken)


def test_ckpt_is_loaded_weights_only(tmp_path: Path) -> None:
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"a": torch.ones(2)}}, good)
    assert torch.equal(read_state_dict(good)[0]["a"], torch.ones(2))

    class Evil:
        def __reduce__(self):  # noqa: ANN204 - what a malicious pickle does
            return (print, ("pwned",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"a": Evil()}}, evil)
    with pytest.raises(ModelFileError, match=r"evil\.ckpt was refused: it is a pickle that contains code") as info:
        read_state_dict(evil)
    # PyTorch's own message advises re-loading with weights_only=False, i.e. running the code.
    assert "weights_only" not in str(info.value) and "False" not in str(info.value)
    assert "print" in str(info.value)  # the global it tried to call


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_legacy_pickle_with_code_is_refused_without_pytorchs_advice(tmp_path: Path) -> None:
    import pickle

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (print, ("pwned",))

    evil = tmp_path / "old-format.pt"
    evil.write_bytes(pickle.dumps({"a": Evil()}))
    with pytest.raises(ModelFileError, match=r"old-format\.pt was refused: it is a pickle that contains code") as info:
        read_state_dict(evil)
    assert "weights_only" not in str(info.value)


def test_missing_file_names_the_folder(make_ctx) -> None:
    from nodes.diffusion.nodes_loaders import CheckpointLoaderSimple

    with pytest.raises(FileNotFoundError, match="checkpoints"):
        CheckpointLoaderSimple().run(make_ctx(), ckpt_name="nope.safetensors")


def test_zoo_metadata_and_other_models(zoo_root: Path) -> None:
    import spandrel

    meta = json.loads(read_state_dict(zoo_root / "checkpoints" / "tiny-sd15.safetensors")[1]["nodeloom_config"])
    assert meta["family"] == "sd15"
    desc = spandrel.ModelLoader().load_from_file(str(zoo_root / "upscale_models" / "tiny-esrgan-x4.safetensors"))
    assert desc.scale == 4
    out = desc.model(torch.rand(1, 3, 8, 8))
    assert out.shape == (1, 3, 32, 32)
    for path in zoo_root.rglob("*.safetensors"):
        assert path.stat().st_size < 8 * 2**20, path
    from transformers import CLIPModel

    scorer = CLIPModel.from_pretrained(zoo_root / "scorers" / "tiny-clip-scorer", local_files_only=True)
    assert scorer.config.projection_dim == 16


def test_tiny_sam_builds_from_its_file(zoo_root: Path) -> None:
    pytest.importorskip("segment_anything")
    from nodes.diffusion.zoo import build_sam

    tensors, meta = read_state_dict(zoo_root / "sams" / "tiny-sam.safetensors")
    sam = build_sam(json.loads(meta["nodeloom_config"])["sam"])
    sam.load_state_dict(tensors)
    from segment_anything import SamPredictor

    predictor = SamPredictor(sam)
    predictor.set_image((torch.rand(48, 64, 3) * 255).to(torch.uint8).numpy())
    import numpy as np

    masks, scores, _ = predictor.predict(box=np.array([4, 4, 40, 30]), multimask_output=False)
    assert masks.shape == (1, 48, 64)


def test_zoo_is_deterministic() -> None:
    from nodes.diffusion.zoo.sd import tiny_sd15

    a, b = tiny_sd15(7), tiny_sd15(7)
    _same(a["unet"], b["unet"])
    _same(a["text_encoders"][0], b["text_encoders"][0])
