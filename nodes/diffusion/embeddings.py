"""Textual-inversion embeddings: ``embedding:name`` in a prompt (ComfyUI's syntax) stands for the
vectors of ``models/embeddings/name[.safetensors|.pt|.bin]``, inserted as that many tokens.

File forms (each read without unpickling code: ``.pt``/``.bin`` weights-only):

- A1111 ``.pt``: ``{"string_to_param": {"*": [n, D]}, "string_to_token": …, "name": …, "step": …}``;
- ``.safetensors`` with ``emb_params`` [n, D] (A1111's safetensors export);
- SDXL's two-encoder form ``{"clip_l": [n, 768], "clip_g": [n, 1280]}`` (also read by SD1.x
  models, whose encoder is CLIP-L, as ComfyUI does);
- diffusers' ``learned_embeds`` (a single tensor [D] or [n, D] under the token's name).

As in ComfyUI, ``(embedding:name:1.2)`` weights the vectors, a word continuing past the name
(``embedding:name,``) keeps its rest as text, and names may include subfolders. Unlike ComfyUI,
which logs a warning and leaves the word out, a missing embedding is an error naming it and the
folders searched (validation-time for a prompt typed in the node): a prompt is never changed
silently.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from graph_runtime.folders import UnsafePath, safe_join
from nodes.diffusion.prompt_weights import parse_weights
from nodes.infra.files import read_pickle, read_state_dict

Tensor = torch.Tensor
PREFIX = "embedding:"
EXTENSIONS = ("", ".safetensors", ".pt", ".bin")
SINGLE = ""  # the key of a file holding one set of vectors (for any encoder of its width)


MAX_NAME_CHARS = 255


class EmbeddingError(ValueError):
    """An embedding that is missing, unreadable or made for another text encoder."""


def embedding_words(text: str) -> list[str]:
    """The words of ``text`` (after weight parsing) that start with ``embedding:``, prefix removed."""
    return [word[len(PREFIX):] for segment, _ in parse_weights(text)
            for word in segment.replace("\n", " ").split(" ") if word.startswith(PREFIX)]


@dataclass(frozen=True)
class Embeddings:
    """The embedding folders of a run (``folders.model_dirs("embeddings")``)."""

    dirs: tuple[Path, ...]

    @classmethod
    def of(cls, folders: Any) -> Embeddings:
        return cls(tuple(Path(d) for d in folders.model_dirs("embeddings")))

    def find(self, word: str) -> tuple[Path, str]:
        """(file, leftover text) for the longest start of ``word`` naming a file. Raises
        EmbeddingError naming the embedding, the folders and what they hold."""
        # A file name is at most 255 bytes, so longer starts cannot name one: trying them all would
        # let one long prompt word cost seconds of validation.
        for end in range(min(len(word), MAX_NAME_CHARS), 0, -1):
            path = self._path(word[:end])
            if path is not None:
                return path, word[end:]
        available = sorted({p.relative_to(d).as_posix() for d in self.dirs if d.is_dir() for p in d.rglob("*")
                            if p.is_file() and p.suffix.lower() in EXTENSIONS[1:]})
        where = " or ".join(map(str, self.dirs)) or "no folder"
        raise EmbeddingError(f"embedding {word[:80].rstrip(',.;:!?') or word[:80]!r} not found in {where} "
                             f"(available: {', '.join(available) or 'none'})")

    def check(self, text: str) -> str | None:
        """Why ``text`` cannot be encoded (a missing embedding), or None."""
        for word in embedding_words(text):
            try:
                self.find(word)
            except EmbeddingError as exc:
                return str(exc)
        return None

    def _path(self, name: str) -> Path | None:
        for directory in self.dirs:
            for ext in EXTENSIONS:
                try:
                    candidate = safe_join(directory, name + ext)
                except UnsafePath:
                    continue
                if candidate.is_file():
                    return candidate
        return None

    def vectors(self, word: str, *, encoder_key: str, width: int) -> tuple[Tensor, str]:
        """([n, width] float32 vectors for the text encoder ``encoder_key`` (clip_l, clip_h,
        clip_g), leftover text) of ``word`` (the part after ``embedding:``)."""
        path, leftover = self.find(word)
        stat = path.stat()
        sets = read_embedding(str(path), stat.st_mtime_ns, stat.st_size)
        found = sets.get(encoder_key, sets.get(SINGLE))
        if found is None:
            raise EmbeddingError(f"embedding {path.name} has vectors for {sorted(sets)}, none for the "
                                 f"{encoder_key} text encoder")
        if found.shape[-1] != width:
            raise EmbeddingError(f"embedding {path.name} holds {found.shape[-1]}-wide vectors; this model's "
                                 f"{encoder_key} text encoder takes {width} (an embedding for another model family?)")
        return found, leftover


@functools.lru_cache(maxsize=64)
def read_embedding(path: str, mtime_ns: int = 0, size: int = 0) -> dict[str, Tensor]:
    """The vector sets of an embedding file: ``{"": [n, D]}``, or ``{"clip_l": …, "clip_g": …}``
    for SDXL's form (cached per path, mtime and size). Raises EmbeddingError for anything else."""
    file = Path(path)
    data = read_state_dict(file)[0] if file.suffix.lower() in (".safetensors", ".sft") else read_pickle(file)
    if not isinstance(data, dict):
        raise EmbeddingError(f"{file.name} is not an embedding: it holds a {type(data).__name__}")
    if isinstance(data.get("string_to_param"), dict):
        params = [v for v in data["string_to_param"].values() if isinstance(v, Tensor)]
        sets = {SINGLE: torch.cat([_rows(v) for v in params])} if params else {}
    elif any(k in data for k in ("clip_l", "clip_g")):
        sets = {k: _rows(data[k]) for k in ("clip_l", "clip_g") if isinstance(data.get(k), Tensor)}
    elif isinstance(data.get("emb_params"), Tensor):
        sets = {SINGLE: _rows(data["emb_params"])}
    else:
        tensors = [v for v in data.values() if isinstance(v, Tensor)]
        sets = {SINGLE: _rows(tensors[0])} if len(tensors) == 1 else {}
    if not sets:
        raise EmbeddingError(f"{file.name} is not a textual-inversion embedding: expected string_to_param, "
                             f"emb_params, clip_l/clip_g or a single tensor; found keys {sorted(map(str, data))[:8]}")
    for key, vectors in sets.items():
        _check_vectors(file.name, key, vectors)
    return sets


def _rows(vectors: Tensor) -> Tensor:
    vectors = vectors.detach().float()
    if vectors.ndim == 0:
        return vectors.new_zeros(0, 0)  # a lone number is no vector: refused by _check_vectors
    return vectors.reshape(1, -1) if vectors.ndim == 1 else vectors.reshape(-1, vectors.shape[-1])


def _check_vectors(name: str, key: str, vectors: Tensor) -> None:
    """Refuse vectors that would change the prompt silently: none at all (the word would vanish)
    or NaN/inf values (they spread through the text encoder and the whole image)."""
    what = f"embedding {name}" + (f" ({key})" if key else "")
    if vectors.numel() == 0:
        raise EmbeddingError(f"{what} holds no vectors (expected an [n, width] tensor)")
    if not bool(torch.isfinite(vectors).all()):
        raise EmbeddingError(f"{what} holds NaN or infinite values: the file is damaged")


@contextlib.contextmanager
def inserted(encoder: torch.nn.Module, ids: Tensor, vectors: list[Tensor]) -> Iterator[Tensor]:
    """Run ``encoder`` on ``ids`` where ids >= its vocabulary size stand for ``vectors[id - size]``:
    yields the ids to pass (those replaced by token 0), and while inside, the token embedding's
    output holds the vectors at those positions (before position embeddings are added, which is
    where diffusers' ``load_textual_inversion`` puts them, as new rows of the table). The shared
    module itself is never changed."""
    table = encoder.get_input_embeddings()
    extra = ids >= table.num_embeddings
    if not bool(extra.any()):
        yield ids
        return
    rows = torch.stack([vectors[int(i) - table.num_embeddings] for i in ids[extra]])

    def hook(module: torch.nn.Module, inputs: Any, output: Tensor) -> Tensor:
        output = output.clone()
        output[extra.to(output.device)] = rows.to(output.device, output.dtype)
        return output

    handle = table.register_forward_hook(hook)
    try:
        yield ids.masked_fill(extra, 0)
    finally:
        handle.remove()
