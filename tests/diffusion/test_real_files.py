"""Files as people have them: single files without metadata that need the real CLIP tokenizer
(nothing to download), diffusers folders saved by transformers 5 or as fp16 variants, and weights
read straight into their target dtype."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from graph_runtime.context import HookContext
from graph_runtime.folders import FolderPaths
from nodes.diffusion.checkpoint import load_checkpoint, read_state_dict
from nodes.diffusion.families import family
from nodes.diffusion.nodes_conditioning import CLIPTextEncode
from nodes.diffusion.nodes_loaders import CheckpointLoaderSimple, DiffusersLoader
from nodes.infra import clip_vocab, ldm_keys
from nodes.infra.files import METADATA_KEY
from nodes.infra.model_manager import manager_from

OPENAI_CAT = [49406, 320, 1125, 539, 320, 2368, 49407]


@pytest.fixture(scope="module")
def tokenizer_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _cache_in_tmp(monkeypatch: pytest.MonkeyPatch, tokenizer_cache: Path) -> None:
    monkeypatch.setenv(clip_vocab.CACHE_ENV, str(tokenizer_cache))


def real_vocab_checkpoint(zoo_root: Path, out: Path, name: str) -> Path:
    """The tiny zoo's checkpoint with text encoders over CLIP's real 49408-token vocabulary, saved
    without our metadata or a tokenizer: what a real single file gives the loader."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from nodes.diffusion.zoo.sd import text_model_name

    tensors, meta = read_state_dict(zoo_root / "checkpoints" / f"{name}.safetensors")
    spec = json.loads(meta[METADATA_KEY])
    torch.manual_seed(5)
    for te in family(spec["family"]).text_encoders:
        cfg = dict(spec[te.part], vocab_size=49408, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
        encoder = (CLIPTextModelWithProjection if te.projection else CLIPTextModel)(CLIPTextConfig(**cfg))
        state = {text_model_name(k): v for k, v in encoder.state_dict().items()}
        tensors = {k: v for k, v in tensors.items() if not k.startswith(te.ldm_prefix)}
        tensors.update(ldm_keys.prefixed(ldm_keys.openclip_from_hf(state) if te.layout == "openclip" else state,
                                         te.ldm_prefix))
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / f"real-{name}.safetensors"))
    return out / f"real-{name}.safetensors"


@pytest.fixture(scope="module")
def real_root(zoo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real") / "models"
    for name in ("tiny-sd15", "tiny-sdxl"):
        real_vocab_checkpoint(zoo_root, root / "checkpoints", name)
    return root


def _ctx(make_ctx, root: Path):  # noqa: ANN001, ANN202
    ctx = make_ctx()
    ctx.folders = FolderPaths(base=root.parent, models_roots=[root])
    return ctx


@pytest.mark.parametrize(("name", "pads"), [("tiny-sd15", [49407]), ("tiny-sdxl", [49407, 0])])
def test_a_real_single_file_needs_no_tokenizer_download(make_ctx, real_root: Path, name: str, pads: list[int]) -> None:
    """No models/clip_tokenizer at all: the encoders get OpenAI's ids, padded per encoder."""
    ctx = _ctx(make_ctx, real_root)
    assert CheckpointLoaderSimple.validate_inputs(HookContext(ctx.folders), ckpt_name=f"real-{name}.safetensors") is None
    _, clip, _ = CheckpointLoaderSimple().run(ctx, ckpt_name=f"real-{name}.safetensors")
    for index, pad in enumerate(pads):
        ids = [t for t, _ in clip.tokenize("a photo of a cat", index)[0][0]]
        assert ids == OPENAI_CAT + [pad] * 70
    cond = CLIPTextEncode().run(ctx, text="a photo of a cat", clip=clip)[0][0][0]
    manager = manager_from(ctx.services)
    direct = []
    for ref, pad in zip(clip.refs, pads):
        encoder = manager.ensure_loaded(ref)
        out = encoder(torch.tensor([OPENAI_CAT + [pad] * 70]), output_hidden_states=True)
        direct.append(out.hidden_states[-2] if len(pads) == 2 else out.last_hidden_state)
    assert torch.allclose(cond, torch.cat(direct, dim=-1), atol=1e-5)


def test_missing_tokenizer_is_a_validation_error_before_anything_loads(
        make_ctx, real_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from graph_runtime.cli import main

    monkeypatch.setattr(clip_vocab, "find_bpe_vocabulary", lambda: None)  # open-clip-torch not installed
    monkeypatch.setenv(clip_vocab.CACHE_ENV, str(tmp_path / "empty-cache"))
    folders = FolderPaths(base=real_root.parent, models_roots=[real_root])
    message = CheckpointLoaderSimple.validate_inputs(HookContext(folders), ckpt_name="real-tiny-sd15.safetensors")
    assert "put vocab.json and merges.txt of openai/clip-vit-large-patch14 into models/clip_tokenizer/" in message
    assert "install open-clip-torch" in message and str(real_root / "clip_tokenizer") in message

    workflow = json.loads((Path(__file__).parents[2] / "workflows" / "txt2img.json").read_text())
    loader = next(k for k, v in workflow.items() if v["class_type"] == "CheckpointLoaderSimple")
    workflow[loader]["inputs"]["ckpt_name"] = "real-tiny-sd15.safetensors"
    (tmp_path / "wf.json").write_text(json.dumps(workflow))
    monkeypatch.setattr("nodes.infra.files.read_state_dict", lambda *a, **k: pytest.fail("weights were read"))
    code = main(["validate", str(tmp_path / "wf.json"), "--base", str(real_root.parent), "--models", str(real_root)])
    assert code == 2


def _same_folder_in(tmp_path: Path, zoo_root: Path, name: str) -> Path:
    target = tmp_path / "models" / "diffusers" / name
    shutil.copytree(zoo_root / "diffusers" / name, target)
    return target


@pytest.mark.parametrize("name", ["tiny-sd15", "tiny-sdxl"])
def test_diffusers_folder_with_a_transformers5_tokenizer(make_ctx, zoo_root: Path, tmp_path: Path, name: str) -> None:
    """tokenizer.json + tokenizer_config.json only, as transformers 5 saves: the same conditioning
    as the single file of the same weights."""
    from transformers import CLIPTokenizer

    folder = _same_folder_in(tmp_path, zoo_root, name)
    for tok_dir in folder.glob("tokenizer*"):
        shutil.rmtree(tok_dir)
        pad = family(name.split("-")[1]).shipped_config()[tok_dir.name]["pad_token"]
        tokenizer = CLIPTokenizer(str(zoo_root / "clip_tokenizer" / "tiny-clip" / "vocab.json"),
                                  str(zoo_root / "clip_tokenizer" / "tiny-clip" / "merges.txt"), pad_token=pad)
        tokenizer.save_pretrained(tok_dir)
        assert sorted(p.name for p in tok_dir.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    ctx = _ctx(make_ctx, tmp_path / "models")
    _, clip, _ = DiffusersLoader().run(ctx, model_path=name)
    from_folder = CLIPTextEncode().run(ctx, text="a photo of a cat, (red:1.2)", clip=clip)[0][0]
    ref_ctx = make_ctx()
    _, ref_clip, _ = CheckpointLoaderSimple().run(ref_ctx, ckpt_name=f"{name}.safetensors")
    expected = CLIPTextEncode().run(ref_ctx, text="a photo of a cat, (red:1.2)", clip=ref_clip)[0][0]
    assert clip.pad_tokens == ref_clip.pad_tokens
    assert torch.allclose(from_folder[0], expected[0], atol=1e-6)
    if expected[1].get("pooled_output") is not None:
        assert torch.allclose(from_folder[1]["pooled_output"], expected[1]["pooled_output"], atol=1e-6)


@pytest.mark.parametrize("name", ["tiny-sd15", "tiny-sdxl"])
def test_diffusers_folder_of_fp16_variants(make_ctx, zoo_root: Path, tmp_path: Path, name: str) -> None:
    import diffusers

    from tests.diffusion.diffusion_helpers import txt2img

    pipe = getattr(diffusers, family(name.split("-")[1]).pipeline).from_pretrained(zoo_root / "diffusers" / name)
    folder = tmp_path / "models" / "diffusers" / name
    pipe.to(torch.float16).save_pretrained(folder, variant="fp16")
    weights = sorted(p.name for p in folder.rglob("*.safetensors"))
    assert weights and all(".fp16." in w for w in weights)
    ctx = _ctx(make_ctx, tmp_path / "models")
    model, clip, vae = DiffusersLoader().run(ctx, model_path=name)
    manager = manager_from(ctx.services)
    unet = manager.ensure_loaded(model.ref)
    assert unet.dtype == torch.float32  # the CPU's compute dtype, whatever the files hold
    ref_unet = diffusers.UNet2DConditionModel.from_pretrained(zoo_root / "diffusers" / name, subfolder="unet")
    for key, value in ref_unet.state_dict().items():
        assert torch.equal(unet.state_dict()[key], value.half().float()), key

    if name != "tiny-sd15":
        return  # one image comparison is enough; both families' weights were compared above
    # The same image as the fp32 folder within fp16 rounding of the weights.
    from nodes.diffusion.nodes_latent import EmptyLatentImage, VAEDecode
    from tests.diffusion.diffusion_helpers import ksample

    latent = EmptyLatentImage().run(ctx, width=64, height=64, batch_size=1)[0]
    image = VAEDecode().run(ctx, samples=ksample(ctx, model, clip, latent, steps=2), vae=vae)[0]
    ref_ctx = make_ctx()
    ref_ctx.folders = FolderPaths(base=zoo_root.parent, models_roots=[zoo_root])
    reference = txt2img(ref_ctx, f"{name}.safetensors", steps=2)
    assert (image - reference).abs().mean() < 0.01


def test_single_file_parts_are_read_into_their_dtypes(zoo_root: Path) -> None:
    path = zoo_root / "checkpoints" / "tiny-sdxl.safetensors"
    comp = load_checkpoint(path, tokenizer_root=lambda n: zoo_root / "clip_tokenizer" / n,
                           dtypes={"unet": torch.bfloat16, "text_encoder": torch.float16,
                                   "text_encoder_2": torch.bfloat16, "vae": torch.float32})
    assert {p.dtype for p in comp.unet.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in comp.text_encoders[0].parameters()} == {torch.float16}
    assert {p.dtype for p in comp.text_encoders[1].parameters()} == {torch.bfloat16}
    assert {p.dtype for p in comp.vae.parameters()} == {torch.float32}
    reference = load_checkpoint(path, tokenizer_root=lambda n: zoo_root / "clip_tokenizer" / n)
    for key, value in reference.unet.state_dict().items():
        assert torch.equal(comp.unet.state_dict()[key], value.to(torch.bfloat16)), key


@pytest.mark.parametrize(("files", "variant"), [
    (["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"], None),  # plain wins
    (["diffusion_pytorch_model.fp16.safetensors"], "fp16"),
    (["model.fp16.safetensors", "config.json"], "fp16"),
    (["diffusion_pytorch_model.safetensors.index.fp16.json", "diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
      "diffusion_pytorch_model.fp16-00002-of-00002.safetensors"], "fp16"),
    (["diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model.safetensors.index.json"], None),
    (["diffusion_pytorch_model.bf16.safetensors", "diffusion_pytorch_model.ema.safetensors"], "bf16"),
    (["pytorch_model.bin"], None),
])
def test_weights_variant_of_a_component_folder(tmp_path: Path, files: list[str], variant: str | None) -> None:
    from nodes.diffusion.diffusers_folder import weights_variant

    for name in files:
        (tmp_path / name).touch()
    assert weights_variant(tmp_path) == variant
