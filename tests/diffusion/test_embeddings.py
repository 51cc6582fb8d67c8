"""Textual inversions: ``embedding:name`` gives diffusers' ``load_textual_inversion`` conditioning,
in every file form, weighted, and a missing or mismatched embedding is a clear error."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from nodes.diffusion.embeddings import EmbeddingError, Embeddings, embedding_words, read_embedding
from nodes.diffusion.nodes_conditioning import CLIPTextEncode, CLIPTextEncodeSDXL
from nodes.infra.model_manager import manager_from

from diffusion_helpers import load

TOL = 1e-5


def _diffusers_embeds(ctx, clip, prompt: str, inversions: list[tuple[torch.Tensor, str, int]]) -> torch.Tensor:
    """prompt_embeds of diffusers' pipeline after ``load_textual_inversion`` on copies of the
    encoders and tokenizers (it adds tokens and rows; the shared ones stay untouched)."""
    import diffusers

    manager = manager_from(ctx.services)
    encoders = [copy.deepcopy(manager.ensure_loaded(ref)) for ref in clip.refs]
    tokenizers = [copy.deepcopy(tok) for tok in clip.tokenizers()]
    if len(encoders) == 2:
        pipe = diffusers.StableDiffusionXLPipeline(vae=None, unet=None, scheduler=None, text_encoder=encoders[0],
                                                  text_encoder_2=encoders[1], tokenizer=tokenizers[0],
                                                  tokenizer_2=tokenizers[1])
    else:
        pipe = diffusers.StableDiffusionPipeline(vae=None, unet=None, scheduler=None, text_encoder=encoders[0],
                                                tokenizer=tokenizers[0], safety_checker=None,
                                                feature_extractor=None, requires_safety_checker=False)
    for vectors, token, index in inversions:
        pipe.load_textual_inversion(vectors, token=token, text_encoder=encoders[index], tokenizer=tokenizers[index])
    with torch.no_grad():
        return pipe.encode_prompt(prompt, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)[0]


@pytest.mark.parametrize("name, count", [("tiny-sd15-ti", 2), ("tiny-sd15-ti3", 3)])
def test_sd15_embedding_matches_load_textual_inversion(make_ctx, zoo_root: Path, name: str, count: int) -> None:
    ctx = make_ctx()
    _, clip, _ = load(ctx, "tiny-sd15.safetensors")
    ours = CLIPTextEncode().run(ctx, text=f"a photo of embedding:{name} on the moon", clip=clip)[0][0][0]
    path = next((zoo_root / "embeddings").glob(f"{name}.*"))
    vectors = read_embedding(str(path))[""]
    assert vectors.shape == (count, 32)
    ref = _diffusers_embeds(ctx, clip, "a photo of ti-token on the moon", [(vectors, "ti-token", 0)])
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max() < TOL
    plain = CLIPTextEncode().run(ctx, text="a photo of on the moon", clip=clip)[0][0][0]
    assert (ours - plain).abs().max() > 1e-2  # the vectors change the conditioning


def test_sdxl_two_encoder_embedding_matches_load_textual_inversion(make_ctx, zoo_root: Path) -> None:
    ctx = make_ctx()
    _, clip, _ = load(ctx, "tiny-sdxl.safetensors")
    cond = CLIPTextEncode().run(ctx, text="a photo of embedding:tiny-sdxl-ti", clip=clip)[0][0]
    state = load_file(str(zoo_root / "embeddings" / "tiny-sdxl-ti.safetensors"))
    ref = _diffusers_embeds(ctx, clip, "a photo of ti-token",
                            [(state["clip_l"], "ti-token", 0), (state["clip_g"], "ti-token", 1)])
    assert (cond[0] - ref).abs().max() < TOL


def test_weighted_embedding_and_trailing_text(make_ctx) -> None:
    """``(embedding:name:1.2)`` weights the vectors like any token; ``embedding:name,`` keeps the comma."""
    ctx = make_ctx()
    _, clip, _ = load(ctx, "tiny-sd15.safetensors")

    def enc(text: str) -> torch.Tensor:
        return CLIPTextEncode().run(ctx, text=text, clip=clip)[0][0][0]

    plain, weighted = enc("a embedding:tiny-sd15-ti cat"), enc("a (embedding:tiny-sd15-ti:1.2) cat")
    empty = enc("")
    rows = slice(2, 4)  # BOS, "a", then the two vectors
    expected = (plain[:, rows] - empty[:, rows]) * 1.2 + empty[:, rows]
    assert (weighted[:, rows] - expected).abs().max() < TOL
    assert (enc("embedding:tiny-sd15-ti, cat") - enc("embedding:tiny-sd15-ti , cat")).abs().max() < TOL


def test_missing_embedding_is_a_validation_error(folders) -> None:
    from graph_runtime.executor import Runtime
    from graph_runtime.registry import load_registry
    from graph_runtime.validation import WorkflowInvalid

    prompt = json.loads((Path(__file__).resolve().parents[2] / "workflows" / "txt2img.json").read_text())
    prompt["7"]["inputs"]["text"] = "blurry, embedding:EasyNegative"
    runtime = Runtime(load_registry(builtins=("nodes.core", "nodes.diffusion"), entry_points=False), folders=folders)
    with pytest.raises(WorkflowInvalid) as info:
        runtime.execute(prompt)
    message = str(info.value)
    assert "EasyNegative" in message and "embeddings" in message and "tiny-sd15-ti.pt" in message


def test_missing_embedding_from_a_linked_prompt_fails_the_node(make_ctx) -> None:
    ctx = make_ctx()
    _, clip, _ = load(ctx, "tiny-sdxl.safetensors")
    with pytest.raises(EmbeddingError, match="'nope' not found"):
        CLIPTextEncodeSDXL().run(ctx, clip=clip, width=64, height=64, crop_w=0, crop_h=0, target_width=64,
                                 target_height=64, text_g="a cat", text_l="embedding:nope")


def test_file_forms_and_wrong_width(tmp_path: Path) -> None:
    torch.save({"<cat>": torch.ones(8)}, tmp_path / "learned_embeds.bin")
    save_file({"emb_params": torch.ones(2, 16)}, str(tmp_path / "narrow.safetensors"))
    save_file({"a": torch.ones(2, 16), "b": torch.ones(2, 16)}, str(tmp_path / "odd.safetensors"))
    found = Embeddings((tmp_path,))
    assert read_embedding(str(tmp_path / "learned_embeds.bin"))[""].shape == (1, 8)
    assert found.find("narrow,")[1] == ","
    with pytest.raises(EmbeddingError, match="16-wide vectors.*takes 32"):
        found.vectors("narrow", encoder_key="clip_l", width=32)
    with pytest.raises(EmbeddingError, match="not a textual-inversion embedding"):
        read_embedding(str(tmp_path / "odd.safetensors"))
    with pytest.raises(EmbeddingError, match="not found"):
        found.find("../narrow")
    assert embedding_words("x (embedding:a:1.2), embedding:b/c,") == ["a", "b/c,"]


def test_unsafe_pickle_is_refused(tmp_path: Path) -> None:
    from nodes.infra.files import ModelFileError

    class Evil:
        def __reduce__(self):  # noqa: ANN204 - what a malicious pickle does
            return (print, ("pwned",))

    torch.save({"string_to_param": {"*": Evil()}}, tmp_path / "evil.pt")
    with pytest.raises(ModelFileError, match="evil.pt was refused: it is a pickle that contains code") as info:
        read_embedding(str(tmp_path / "evil.pt"))
    assert "weights_only=False" not in str(info.value)


@pytest.mark.parametrize("tensor, reason", [(torch.tensor(1.0), "holds no vectors"), (torch.zeros(0, 32), "holds no vectors"),
                                            (torch.full((2, 32), float("nan")), "NaN or infinite"),
                                            (torch.tensor([[1.0, float("inf")]]), "NaN or infinite")])
def test_empty_or_damaged_vectors_are_refused(tmp_path: Path, tensor: torch.Tensor, reason: str) -> None:
    """A file whose vectors are missing would make the word vanish from the prompt; NaN vectors
    would turn the whole image to NaN: both are errors naming the file, never silent."""
    torch.save({"string_to_param": {"*": tensor}}, tmp_path / "broken.pt")
    with pytest.raises(EmbeddingError, match=f"broken.pt.*{reason}"):
        Embeddings((tmp_path,)).vectors("broken", encoder_key="clip_l", width=32)


def test_a_very_long_embedding_word_tries_only_names_a_file_can_have(tmp_path, monkeypatch) -> None:
    """A 200k-character word costs at most 255 lookups; the message shows a bounded, non-empty name."""
    from nodes.diffusion.embeddings import Embeddings

    (tmp_path / "embeddings").mkdir()
    embeddings = Embeddings((tmp_path / "embeddings",))
    tried: list[str] = []
    lookup = Embeddings._path
    monkeypatch.setattr(Embeddings, "_path", lambda self, name: tried.append(name) or lookup(self, name))
    message = embeddings.check("embedding:" + "a" * 200_000)
    assert len(tried) == 255 and max(map(len, tried)) == 255
    assert message is not None and "'" + "a" * 80 + "'" in message
    assert "embedding '..' not found" in (embeddings.check("embedding:..") or "")
