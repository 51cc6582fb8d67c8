"""The caption vocabulary (``caption_vocab``): every caption word one token, any text still
tokenized (byte by byte) and decoded back, read alike by transformers' CLIPTokenizer from our
files and from the tokenizer.json it saves; the tiny zoo vocabulary is unchanged by the shared
BPE learner."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from nodes.infra.tokenizer import caption_vocab, load_tokenizer, tiny_vocab, write_vocab

CAPTIONS = ["a red mug on a blue background", "A green T-shirt's 42 bottles", "Café  crème on a white table",
            "a red bottle on a white table"]


def tokenizer_for(captions: list[str], folder: Path):  # noqa: ANN201
    write_vocab(folder, *caption_vocab(captions))
    load_tokenizer.cache_clear()
    return load_tokenizer(str(folder))


def test_every_caption_word_is_one_token(tmp_path: Path) -> None:
    tok = tokenizer_for(CAPTIONS, tmp_path / "tok")
    tokens = tok.convert_ids_to_tokens(tok("a red mug on a blue background")["input_ids"])
    assert tokens == ["<|startoftext|>", "a</w>", "red</w>", "mug</w>", "on</w>", "a</w>", "blue</w>",
                      "background</w>", "<|endoftext|>"]
    # CLIP's pre-tokenizer splits digits, punctuation and 's; case and spacing are normalised.
    assert tok.convert_ids_to_tokens(tok("A green T-shirt's 42 bottles", add_special_tokens=False)["input_ids"]) == [
        "a</w>", "green</w>", "t</w>", "-</w>", "shirt</w>", "'s</w>", "4</w>", "2</w>", "bottles</w>"]
    assert len(tok("café crème", add_special_tokens=False)["input_ids"]) == 2
    assert tok.eos_token_id == len(tok) - 1 and tok.bos_token_id == len(tok) - 2


def test_any_text_tokenizes_and_decodes_back(tmp_path: Path) -> None:
    tok = tokenizer_for(CAPTIONS, tmp_path / "tok")
    for text in ["unseen wörds & 日本語 ✓", "a purple lamp!!", "x", "emoji 🙂 tab\tnewline\n"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        decoded = tok.decode(ids)
        assert "".join(decoded.split()) == "".join(text.lower().split())


def test_transformers_reads_the_files_and_its_own_save_alike(tmp_path: Path) -> None:
    from transformers import CLIPTokenizer

    ours = tokenizer_for(CAPTIONS, tmp_path / "tok")
    ours.save_pretrained(tmp_path / "saved")  # tokenizer.json, what a scorer folder holds
    theirs = CLIPTokenizer.from_pretrained(str(tmp_path / "saved"))
    text = "a red bottle on a white table, 3 mugs"
    assert theirs(text)["input_ids"] == ours(text)["input_ids"]


def test_the_vocabulary_is_deterministic_and_the_tiny_one_unchanged() -> None:
    assert caption_vocab(CAPTIONS) == caption_vocab(list(reversed(CAPTIONS)))
    digest = hashlib.sha256(json.dumps(list(tiny_vocab())).encode()).hexdigest()
    assert digest == "a0ab927b8d7c0ae91429a6e75f094f4f77a57327e91dc3a6e59b9e782934e222"
