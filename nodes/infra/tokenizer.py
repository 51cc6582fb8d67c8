"""CLIP BPE tokenizers without a hub: a tiny deterministic vocabulary for the zoo, the lookup of
the tokenizer a checkpoint needs, and the text cleaning OpenAI's CLIP tokenizer applies.

Single-file checkpoints carry no tokenizer. Real SD/SDXL checkpoints all use OpenAI CLIP's BPE
vocabulary (OpenCLIP's is the same), so one tokenizer serves every family; only the pad token
differs per encoder. The lookup (:func:`find_tokenizer_dir`) takes ``models/clip_tokenizer/<name>``
when the user put one there, else, for the default name, the files built from the vocabulary
open-clip-torch ships (``nodes.infra.clip_vocab``): nothing to download.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

DEFAULT_TOKENIZER = "clip-vit-large-patch14"
TINY_TOKENIZER = "tiny-clip"

# A small prompt-ish corpus: the merges learnt from it make common prompt words single tokens.
_CORPUS = """a photo of an astronaut riding a horse on the moon portrait of a cat dog in the style of
storyboard sketch painting oil watercolor cinematic lighting highly detailed masterpiece best quality
worst quality low quality blurry ugly bad anatomy landscape mountain river forest city night sunset red
blue green yellow white black girl boy man woman face eyes hair smile product shot studio background
beautiful colorful simple line art thumbnail rough pencil drawing"""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def learn_merges(words: Counter[tuple[str, ...]], limit: int | None = None) -> list[tuple[str, str]]:
    """BPE training (Sennrich et al. 2016): repeatedly merge the most frequent adjacent pair of
    symbols over ``words`` (symbol sequences with their counts), at most ``limit`` times (None:
    until every word is one symbol). Ties go to the larger pair, so the result is deterministic.
    Encoding a training word with these merges in rank order gives back its final symbols."""
    splits = dict(words)
    merges: list[tuple[str, str]] = []
    while limit is None or len(merges) < limit:
        pairs: Counter[tuple[str, str]] = Counter()
        for parts, count in splits.items():
            for a, b in zip(parts, parts[1:]):
                pairs[(a, b)] += count
        if not pairs:
            break
        best = max(pairs.items(), key=lambda item: (item[1], item[0]))[0]
        merges.append(best)
        merged: Counter[tuple[str, ...]] = Counter()
        for parts, count in splits.items():
            merged[_merge(parts, best)] += count
        splits = dict(merged)
    return merges


def _merge(parts: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(parts):
        if i + 1 < len(parts) and (parts[i], parts[i + 1]) == pair:
            out.append(parts[i] + parts[i + 1])
            i += 2
        else:
            out.append(parts[i])
            i += 1
    return tuple(out)


def byte_symbols() -> list[str]:
    """The 256 byte symbols then their end-of-word forms: the first 512 entries of every CLIP vocabulary."""
    symbols = list(bytes_to_unicode().values())
    return symbols + [s + "</w>" for s in symbols]


def _vocabulary(merges: list[tuple[str, str]]) -> dict[str, int]:
    tokens = byte_symbols()
    known = set(tokens)
    for a, b in merges:
        if a + b not in known:  # two merge paths may spell the same token
            tokens.append(a + b)
            known.add(a + b)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def tiny_vocab(num_merges: int = 200) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style vocabulary: byte symbols, their end-of-word forms, learnt merges, specials."""
    words = Counter(tuple(w[:-1]) + (w[-1] + "</w>",) for w in _CORPUS.split())
    merges = learn_merges(words, num_merges)
    return _vocabulary(merges), merges


def caption_vocab(captions: Sequence[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP BPE vocabulary for a caption set: the 512 byte symbols (so any text still
    tokenizes, byte by byte), merges that make every word of every caption one ``word</w>``
    token, and ``<|startoftext|>``/``<|endoftext|>`` last. Words are what CLIPTokenizer's own
    normaliser and pre-tokenizer make of the text (lower case; letters, single digits and
    punctuation runs apart; bytes mapped by :func:`bytes_to_unicode`), taken from a CLIPTokenizer
    so the two never disagree."""
    from transformers import CLIPTokenizer

    backend = CLIPTokenizer(vocab={"<|startoftext|>": 0, "<|endoftext|>": 1}, merges=[]).backend_tokenizer
    words: Counter[tuple[str, ...]] = Counter()
    for caption in captions:
        text = backend.normalizer.normalize_str(clean_text(caption))
        for piece, _ in backend.pre_tokenizer.pre_tokenize_str(text):
            words[tuple(piece[:-1]) + (piece[-1] + "</w>",)] += 1
    merges = learn_merges(words)
    return _vocabulary(merges), merges


def write_tokenizer(directory: Path, *, pad_token: str = "<|endoftext|>", num_merges: int = 200) -> int:
    """Write the tiny vocabulary's vocab.json, merges.txt and side files; returns the vocab size."""
    vocab, merges = tiny_vocab(num_merges)
    return write_vocab(directory, vocab, merges, pad_token=pad_token)


def write_vocab(directory: Path, vocab: dict[str, int], merges: list[tuple[str, str]], *,
                pad_token: str = "<|endoftext|>") -> int:
    """Write vocab.json, merges.txt and the transformers side files of a CLIP BPE vocabulary into
    ``directory`` (created); returns the vocab size."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                          encoding="utf-8")
    (directory / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": pad_token}))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": pad_token,
        "do_lower_case": True, "errors": "replace"}))
    return len(vocab)


class MissingTokenizer(FileNotFoundError):
    """No usable tokenizer files; the message says what to put where."""


def has_tokenizer_files(folder: Path) -> bool:
    """vocab.json + merges.txt (openai's layout, transformers 4 saves) or tokenizer.json (transformers 5)."""
    folder = Path(folder)
    return ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()) or (folder / "tokenizer.json").is_file()


def find_tokenizer_dir(name: str | None, roots: Sequence[Path]) -> Path:
    """The folder of tokenizer ``name``: ``<root>/<name>`` under the first clip_tokenizer root that
    has its files, else (default name only) the tokenizer built from the shipped BPE vocabulary.
    Raises :class:`MissingTokenizer` naming the folder to fill."""
    name = name or DEFAULT_TOKENIZER
    for root in roots:
        if has_tokenizer_files(Path(root) / name):
            return Path(root) / name
    wanted = Path(roots[0] if roots else "models/clip_tokenizer") / name
    if name != DEFAULT_TOKENIZER:
        raise MissingTokenizer(f"CLIP tokenizer {name!r} not found: put its vocab.json and merges.txt (or a "
                               f"tokenizer.json) into {wanted}/")
    from nodes.infra.clip_vocab import bundled_tokenizer_dir

    try:
        return bundled_tokenizer_dir()
    except MissingTokenizer as exc:
        raise MissingTokenizer(f"{exc}; the folder looked in was {wanted}/") from exc


def clean_text(text: str) -> str:
    """OpenAI CLIP's text cleaning before BPE (``basic_clean`` + ``whitespace_clean`` of
    openai/CLIP's ``simple_tokenizer.py``, which open_clip keeps): ftfy's mojibake and ligature
    fixes, HTML entities unescaped twice, runs of whitespace collapsed. transformers 5's
    CLIPTokenizer leaves these out; lower-casing is its own. Without ftfy only the rest applies."""
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    return " ".join(html.unescape(html.unescape(text)).split())


@lru_cache(maxsize=16)
def load_tokenizer(directory: str, pad_token: str = "<|endoftext|>", model_max_length: int = 77):  # noqa: ANN201
    """A CLIPTokenizer from a folder holding vocab.json + merges.txt, or the tokenizer.json +
    tokenizer_config.json transformers 5 saves (cached: tokenizers are immutable and cheap to
    share). Raises :class:`MissingTokenizer` when the folder has neither."""
    from transformers import CLIPTokenizer

    folder = Path(directory)
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token=pad_token,
                             model_max_length=model_max_length)
    if (folder / "tokenizer.json").is_file():
        return CLIPTokenizer.from_pretrained(str(folder), pad_token=pad_token, model_max_length=model_max_length,
                                             local_files_only=True)
    raise MissingTokenizer(
        f"no CLIP tokenizer files in {folder}: it needs vocab.json and merges.txt, or tokenizer.json "
        f"(what transformers' save_pretrained writes)")
