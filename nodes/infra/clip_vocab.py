"""The CLIP BPE tokenizer files every real SD1.x/SD2.x/SDXL checkpoint needs, built offline from
the BPE vocabulary that open-clip-torch (or openai-clip) ships, and cached.

OpenAI's CLIP tokenizer is defined by one file, ``bpe_simple_vocab_16e6.txt.gz`` (MIT): a header
line, then BPE merges in rank order. ``openai/CLIP``'s ``SimpleTokenizer`` (and ``open_clip``'s copy)
uses the first 49152 - 256 - 2 of them and numbers the vocabulary as

    256 byte symbols (GPT-2's reversible byte -> unicode table, in its order)
    the same 256 symbols with the end-of-word marker ``</w>``
    one token per merge, its two halves concatenated, in merge order
    ``<|startoftext|>`` = 49406, ``<|endoftext|>`` = 49407

which is exactly ``vocab.json`` + ``merges.txt`` of ``openai/clip-vit-large-patch14`` (the files
transformers' ``CLIPTokenizer`` reads); OpenCLIP's ViT-H/bigG towers (SD2, SDXL's second encoder)
use the same vocabulary and differ only in the pad token. The files are written once per
vocabulary (keyed by its SHA-256) under the user cache folder, atomically: concurrent processes
either build their own copy and rename it into place, or use the one that won.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from nodes.infra.tokenizer import MissingTokenizer, bytes_to_unicode

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
# Import names of the packages that ship BPE_FILE next to their tokenizer, in order of preference.
BPE_PACKAGES = ("open_clip", "clip")
NUM_MERGES = 49152 - 256 - 2  # openai/CLIP's SimpleTokenizer: the vocabulary has 49408 entries
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
CACHE_ENV = "NODELOOM_CACHE_DIR"


def find_bpe_vocabulary() -> Path | None:
    """The shipped ``bpe_simple_vocab_16e6.txt.gz`` of the first installed package that has it
    (found without importing the package), or None."""
    for package in BPE_PACKAGES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(location) / BPE_FILE
            if candidate.is_file():
                return candidate
    return None


def clip_vocabulary(bpe_file: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(token -> id, merges in rank order) from a CLIP BPE file (see the module docstring).
    Raises ValueError when the file does not hold a full CLIP vocabulary."""
    lines = gzip.open(bpe_file).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]
    if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{bpe_file} is not a CLIP BPE vocabulary ({len(merges)} merges, expected {NUM_MERGES})")
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + [a + b for a, b in merges] + list(SPECIAL_TOKENS)
    return {token: index for index, token in enumerate(tokens)}, merges  # type: ignore[return-value]


def write_clip_tokenizer(directory: Path, bpe_file: Path) -> Path:
    """Write vocab.json, merges.txt and the transformers side files of OpenAI CLIP's tokenizer
    into ``directory`` (created; existing files are replaced)."""
    vocab, merges = clip_vocabulary(bpe_file)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                          encoding="utf-8")
    specials = {"bos_token": SPECIAL_TOKENS[0], "eos_token": SPECIAL_TOKENS[1], "unk_token": SPECIAL_TOKENS[1],
                "pad_token": SPECIAL_TOKENS[1]}
    (directory / "special_tokens_map.json").write_text(json.dumps(specials))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        dict(specials, tokenizer_class="CLIPTokenizer", model_max_length=77, do_lower_case=True, errors="replace")))
    return directory


def cache_root() -> Path:
    """``$NODELOOM_CACHE_DIR``, else ``$XDG_CACHE_HOME/nodeloom``, else ``~/.cache/nodeloom``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nodeloom"


def bundled_tokenizer_dir(*, root: Path | None = None, bpe_file: Path | None = None) -> Path:
    """The folder holding OpenAI CLIP's tokenizer files, built from the shipped BPE vocabulary on
    first use and cached under ``root`` (default :func:`cache_root`, or the temp folder when that
    is not writable). Raises :class:`MissingTokenizer` when no installed package ships the file."""
    bpe_file = bpe_file or find_bpe_vocabulary()
    if bpe_file is None:
        raise MissingTokenizer(
            f"no CLIP BPE vocabulary found: install open-clip-torch (it ships {BPE_FILE}), or put vocab.json "
            "and merges.txt of openai/clip-vit-large-patch14 into models/clip_tokenizer/clip-vit-large-patch14/")
    digest = hashlib.sha256(Path(bpe_file).read_bytes()).hexdigest()[:16]
    for base in (root or cache_root(), Path(tempfile.gettempdir()) / f"nodeloom-{os.getuid()}"):
        target = Path(base) / "clip_tokenizer" / f"openai-clip-{digest}"
        if (target / "vocab.json").is_file() and (target / "merges.txt").is_file():
            return target
        try:
            return _build_atomically(target, Path(bpe_file))
        except OSError:
            continue  # read-only cache folder: try the next place
    raise MissingTokenizer(f"cannot write the CLIP tokenizer cache under {root or cache_root()} or the temp folder")


def _build_atomically(target: Path, bpe_file: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        write_clip_tokenizer(staging, bpe_file)
        try:
            os.rename(staging, target)  # atomic; fails when another process got there first
        except OSError:
            if not (target / "vocab.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
