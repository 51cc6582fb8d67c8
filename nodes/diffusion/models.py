"""The values that flow on MODEL, CLIP and VAE links.

Each is a small immutable description: a reference to a shared module in the ModelManager plus
what makes this use of it different (LoRA patches, the CLIP layer to stop at). Nodes that modify a
model return a new description; nothing touches the shared module outside a ``use``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch

from nodes.diffusion.embeddings import PREFIX as EMBEDDING_PREFIX
from nodes.diffusion.embeddings import Embeddings, inserted
from nodes.diffusion.families import FamilySpec, family
from nodes.diffusion.lora import Patch, patched
from nodes.diffusion.merge import AnyPatch, applied
from nodes.infra.model_manager import ModelManager, ModelRef
from nodes.diffusion.prompt_weights import chunk_tokens
from nodes.infra.tokenizer import clean_text, load_tokenizer

Conditioning = list[list[Any]]  # ComfyUI's [[embeddings [1, T, D], {"pooled_output": ...}], ...]


@dataclass(frozen=True, eq=False)
class DiffusionModel:
    """MODEL: a UNet and how to sample it. ``patches`` (LoRAs, merges with other MODELs; see
    :mod:`nodes.diffusion.merge`) apply in order for the duration of each use."""

    ref: ModelRef
    family: str
    scheduler_config: dict[str, Any]
    patches: tuple[AnyPatch, ...] = ()
    # The scheduler config as loaded, once ModelSamplingDiscrete has rewritten scheduler_config: a
    # second one starts from it and replaces the first (as ComfyUI's does) instead of stacking on it.
    loaded_scheduler_config: dict[str, Any] | None = None

    @property
    def spec(self) -> FamilySpec:
        return family(self.family)

    def with_patch(self, patch: AnyPatch) -> DiffusionModel:
        return replace(self, patches=(*self.patches, patch))

    @contextlib.contextmanager
    def use(self, manager: ModelManager) -> Iterator[torch.nn.Module]:
        with manager.use(self.ref) as (unet,), applied(unet, manager, self.patches, key=self.ref.key):
            yield unet


@dataclass(frozen=True, eq=False)
class ClipModel:
    """CLIP: one (SD1/SD2) or two (SDXL) text encoders with their tokenizers."""

    family: str
    refs: tuple[ModelRef, ...]
    tokenizer_dirs: tuple[str, ...]
    pad_tokens: tuple[str, ...]
    layer: int = -1  # CLIPSetLastLayer: -1 = last layer, -2 = penultimate, …
    patches: tuple[tuple[Patch, ...], ...] = ()
    force_zeros_for_empty_prompt: bool = False

    def with_patches(self, per_encoder: list[Patch | None]) -> ClipModel:
        current = self.patches or tuple(() for _ in self.refs)
        merged = tuple(p + ((q,) if q is not None else ()) for p, q in zip(current, per_encoder))
        return replace(self, patches=merged)

    def tokenizers(self) -> list[Any]:
        return [load_tokenizer(d, pad) for d, pad in zip(self.tokenizer_dirs, self.pad_tokens)]

    def tokenize(self, text: str, encoder: int = 0, *, embeddings: Embeddings | None = None,
                 table: torch.nn.Embedding | None = None) -> tuple[list[list[tuple[int, float]]], list[torch.Tensor]]:
        """Weighted 77-token windows of ``text`` for text encoder ``encoder``, and the
        textual-inversion vectors its ``embedding:name`` words stand for: an id ``table.num_embeddings
        + k`` means ``vectors[k]``. Without ``embeddings`` (and the encoder's token ``table``, for
        its size and width) such words are plain text."""
        tok = self.tokenizers()[encoder]
        key = family(self.family).text_encoders[encoder].embedding_key
        vectors: list[torch.Tensor] = []

        def word_ids(word: str) -> list[int]:
            if embeddings is None or table is None or not word.startswith(EMBEDDING_PREFIX):
                return tok(clean_text(word), add_special_tokens=False)["input_ids"]
            found, rest = embeddings.vectors(word[len(EMBEDDING_PREFIX):], encoder_key=key, width=table.embedding_dim)
            first = table.num_embeddings + len(vectors)
            vectors.extend(found)
            return list(range(first, first + len(found))) + (word_ids(rest) if rest else [])

        chunks = chunk_tokens(text, word_ids, bos=tok.bos_token_id, eos=tok.eos_token_id, pad=tok.pad_token_id,
                              max_length=tok.model_max_length)
        return chunks, vectors

    def encode(self, manager: ModelManager, text: str, *, text_l: str | None = None,
               embeddings: Embeddings | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(embeddings [1, 77*k, D], pooled [1, P]) for ``text``; for SDXL ``text_l`` (default
        ``text``) feeds the CLIP-L encoder and ``text`` the bigG one. ``embedding:name`` words use
        ``embeddings`` (EmbeddingError when one is missing or made for another encoder)."""
        texts = [text_l if text_l is not None else text, text] if len(self.refs) == 2 else [text]
        patches = self.patches or tuple(() for _ in self.refs)
        with manager.use(*self.refs) as encoders:
            outputs = []
            for index, (encoder, prompt, patch) in enumerate(zip(encoders, texts, patches)):
                chunks, vectors = self.tokenize(prompt, index, embeddings=embeddings,
                                                table=encoder.get_input_embeddings())
                with patched(encoder, patch):
                    outputs.append(self._encode_one(encoder, index, chunks, vectors))
        chunks = min(o[0].shape[1] for o in outputs)
        embeds = torch.cat([o[0][:, :chunks] for o in outputs], dim=-1)
        pooled = outputs[-1][1]
        return embeds.float().cpu(), None if pooled is None else pooled.float().cpu()

    def _encode_one(self, encoder: torch.nn.Module, index: int, chunks: list[list[tuple[int, float]]],
                    vectors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """ComfyUI's weighting: token embeddings move away from the empty prompt's by their weight,
        ``z = (z - z_empty) * w + z_empty``; only the first chunk's pooled output is kept."""
        weighted = any(w != 1.0 for chunk in chunks for _, w in chunk)
        ids = [[t for t, _ in chunk] for chunk in chunks]
        device = next(encoder.parameters()).device
        with inserted(encoder, torch.tensor(ids, device=device), vectors) as batch:
            hidden, pooled = self._forward(encoder, batch)
        if weighted:
            empty_ids = self._empty_ids(index, len(ids[0]))
            z_empty, _ = self._forward(encoder, torch.tensor([empty_ids], device=device))
            weights = torch.tensor([[w for _, w in chunk] for chunk in chunks], device=device, dtype=hidden.dtype)
            hidden = (hidden - z_empty) * weights.unsqueeze(-1) + z_empty
        return hidden.reshape(1, -1, hidden.shape[-1]), None if pooled is None else pooled[:1]

    def _empty_ids(self, index: int, length: int) -> list[int]:
        tok = self.tokenizers()[index]
        return [tok.bos_token_id, tok.eos_token_id] + [tok.pad_token_id] * (length - 2)

    def _forward(self, encoder: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = encoder(ids, output_hidden_states=True)
        pooled = getattr(out, "text_embeds", None)
        if pooled is None:
            pooled = getattr(out, "pooler_output", None)
        if family(self.family).clip_skip_from_penultimate:
            # SDXL conditions on the penultimate layer without the final norm (diffusers' clip_skip
            # counts from there): CLIPSetLastLayer(-n) reads hidden_states[-n - 1].
            return out.hidden_states[self.layer - 1], pooled
        layer = self.layer
        if any(te.drop_last_block for te in family(self.family).text_encoders):
            # SD2's model ends at the file's penultimate block (its default): CLIPSetLastLayer(-2)
            # is that, -3 the block before. -1 (ComfyUI: the dropped last block) stays the default.
            layer = min(layer + 1, -1)
        if layer == -1:
            return out.last_hidden_state, pooled
        hidden = out.hidden_states[layer]
        return getattr(encoder, "text_model", encoder).final_layer_norm(hidden), pooled


@dataclass(frozen=True, eq=False)
class VaeModel:
    """VAE: an AutoencoderKL (or the pixel family's parameter-free PixelUnshuffleVAE) and its latent
    scaling; latents are ``[B, latent_channels, H / downscale, W / downscale]``."""

    ref: ModelRef
    scaling_factor: float
    shift_factor: float = 0.0
    latent_channels: int = 4
    downscale: int = 8

    @contextlib.contextmanager
    def use(self, manager: ModelManager) -> Iterator[torch.nn.Module]:
        with manager.use(self.ref) as (vae,):
            yield vae
