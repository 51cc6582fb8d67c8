"""Prompt weighting syntax, chunking, and its effect on the embeddings."""

from __future__ import annotations

import torch

from nodes.diffusion.prompt_weights import chunk_tokens, parse_weights


def test_parse_weights() -> None:
    assert parse_weights("a (b:1.5) c") == [("a ", 1.0), ("b", 1.5), (" c", 1.0)]
    assert parse_weights("((x))")[0][1] == pytest_approx(1.21)
    assert parse_weights("(x)") == [("x", 1.1)]
    assert parse_weights("\\(literal\\) word") == [("(literal) word", 1.0)]
    assert parse_weights("(a (b:2.0))") == [("a ", 1.1), ("b", 2.0)]


def pytest_approx(value: float):  # noqa: ANN201
    import pytest

    return pytest.approx(value)


def test_chunking_keeps_words_whole() -> None:
    words = {f"w{i}": [i, i + 1000] for i in range(60)}  # two tokens per word
    chunks = chunk_tokens(" ".join(words), lambda w: words[w], bos=1, eos=2, pad=0)
    assert len(chunks) == 2 and all(len(c) == 77 for c in chunks)
    assert chunks[0][0] == (1, 1.0) and chunks[0][75] == (2, 1.0)  # 37 words = 74 tokens, then EOS
    assert chunks[1][1] == (37, 1.0)


def test_weights_move_embeddings_from_the_empty_prompt(make_ctx) -> None:
    from nodes.diffusion.nodes_conditioning import CLIPTextEncode
    from nodes.diffusion.nodes_loaders import CheckpointLoaderSimple

    ctx = make_ctx()
    _, clip, _ = CheckpointLoaderSimple().run(ctx, ckpt_name="tiny-sd15.safetensors")
    encode = lambda text: CLIPTextEncode().run(ctx, text=text, clip=clip)[0][0][0]  # noqa: E731
    plain, weighted, empty = encode("cat dog"), encode("cat (dog:1.5)"), encode("")
    # Unweighted text skips the weighting pass: the plain encoder output.
    tok = clip.tokenizers()[0]
    ids = tok("cat dog", padding="max_length", max_length=77, return_tensors="pt").input_ids
    from nodes.infra.model_manager import manager_from

    encoder = manager_from(ctx.services).ensure_loaded(clip.refs[0])
    assert torch.allclose(plain, encoder(ids)[0], atol=1e-6)
    n_cat = len(tok("cat", add_special_tokens=False).input_ids)
    n_dog = len(tok("dog", add_special_tokens=False).input_ids)
    dog = slice(1 + n_cat, 1 + n_cat + n_dog)
    # Weighted tokens: z = (z - z_empty) * w + z_empty, with z from the same (unweighted) text.
    expected = (plain[:, dog] - empty[:, dog]) * 1.5 + empty[:, dog]
    assert torch.allclose(weighted[:, dog], expected, atol=1e-5)
    assert torch.allclose(weighted[:, : 1 + n_cat], plain[:, : 1 + n_cat], atol=1e-6)


def test_long_prompt_is_chunked(make_ctx) -> None:
    from nodes.diffusion.nodes_conditioning import CLIPTextEncode
    from nodes.diffusion.nodes_loaders import CheckpointLoaderSimple

    ctx = make_ctx()
    _, clip, _ = CheckpointLoaderSimple().run(ctx, ckpt_name="tiny-sdxl.safetensors")
    cond = CLIPTextEncode().run(ctx, text="a photo of a cat " * 40, clip=clip)[0]
    embeds, extras = cond[0]
    assert embeds.shape[1] % 77 == 0 and embeds.shape[1] >= 77 * 3  # 40 repeats: several windows
    assert embeds.shape[2] == 64  # both SDXL encoders, concatenated
    assert extras["pooled_output"].shape == (1, 32)
