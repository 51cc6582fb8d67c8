"""CLIP image and text embeddings from a local transformers-format folder, for preference scorers
(PickScore) and evaluation metrics (CLIP score): loaded once through the model manager, images and
prompts embedded as the published PickScore code does (``get_image_features`` /
``get_text_features`` of a ``CLIPModel``, each L2-normalised).

A scorer folder holds a ``CLIPModel`` saved with ``save_pretrained`` (``config.json`` plus
weights) and its processor (``preprocessor_config.json`` and the tokenizer files), e.g.
``models/scorers/PickScore_v1/``. Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graph_runtime.folders import FolderPaths
from nodes.infra.files import ModelFileError
from nodes.infra.model_manager import ModelManager, ModelRef

PART = "clip"
IMAGE_CHUNK = 16  # images embedded per forward pass: bounds activation memory for large N
MAX_TEXT_TOKENS = 77  # PickScore truncates prompts to CLIP's context


@dataclass(frozen=True, eq=False)
class ClipScorer:
    """A CLIPModel in the model manager plus the folder its processor is read from."""

    ref: ModelRef
    folder: Path
    name: str


def folder_identity(folder: Path) -> tuple[Any, ...]:
    """(name, mtime, size) of every file in ``folder``: a replaced weight file is a new model."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    return tuple((p.relative_to(folder).as_posix(), p.stat().st_mtime_ns, p.stat().st_size) for p in files)


def named_identity(folders: FolderPaths, folder: str, name: str | None) -> tuple[Any, ...] | None:
    """A scorer loader node's fingerprint: the identity of ``models/<folder>/<name>``, None when
    it is missing (validation names it)."""
    try:
        return folder_identity(folders.model_path(folder, name or ""))
    except (OSError, ValueError):
        return None


def load_clip_scorer(manager: ModelManager, folder: Path, *, label: str = "") -> ClipScorer:
    """The scorer in ``folder``, loaded now (a broken folder fails in the loader node). Raises
    ModelFileError naming the folder when the model or its processor cannot be read."""
    from transformers import CLIPModel

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ModelFileError(f"{folder.name}: not a transformers model folder (no config.json in {folder})")
    group = ("clip_scorer", str(folder.resolve()), folder_identity(folder))

    def loader() -> dict[str, torch.nn.Module]:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # a bar per load on the user's terminal or server log
        try:
            return {PART: CLIPModel.from_pretrained(str(folder), local_files_only=True)}
        except Exception as exc:  # noqa: BLE001 - transformers raises OSError/ValueError/KeyError alike
            raise ModelFileError(f"{folder.name}: cannot load a CLIPModel from {folder} "
                                 f"({type(exc).__name__}: {exc})") from exc

    scorer = ClipScorer(ref=ModelRef(group, PART, loader, label or folder.name), folder=folder,
                        name=label or folder.name)
    manager.ensure_loaded(scorer.ref)
    processor(manager, scorer)
    return scorer


def processor(manager: ModelManager, scorer: ClipScorer) -> Any:
    """The folder's CLIPProcessor, kept in the manager's descriptions cache."""
    from transformers import CLIPProcessor

    cached = manager.descriptions.get(scorer.ref.group)
    if cached is None:
        try:
            cached = CLIPProcessor.from_pretrained(str(scorer.folder), local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - missing or malformed processor files
            raise ModelFileError(f"{scorer.folder.name}: cannot load the CLIP processor (preprocessor_config.json "
                                 f"and tokenizer files) from {scorer.folder} ({type(exc).__name__}: {exc})") from exc
        require_vocabulary(cached.tokenizer, scorer.folder)
        manager.descriptions.put(scorer.ref.group, cached)
    return cached


def require_vocabulary(tokenizer: Any, folder: Path) -> None:
    """Raise ModelFileError when the tokenizer knows only its special tokens: transformers builds
    such an empty CLIPTokenizer, without an error, from a folder lacking tokenizer.json (or
    vocab.json and merges.txt), and every prompt would then score as the same unknown tokens."""
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):
        raise ModelFileError(f"{folder.name}: the CLIP tokenizer in {folder} has no vocabulary (only "
                             f"{len(tokenizer)} special tokens): tokenizer.json, or vocab.json and merges.txt, "
                             f"is missing")


def to_uint8_images(images: torch.Tensor) -> list[np.ndarray]:
    """IMAGE [B, H, W, C] float 0..1 (C = 1, 3 or 4; NaN refused) -> RGB uint8 arrays, what the
    processor gets from image files. Raises ValueError for another shape or non-finite pixels."""
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or 0 in images.shape:
        raise ValueError(f"images must be [batch, height, width, 1|3|4 channels] and not empty; got "
                         f"{list(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError("images hold NaN or infinite pixels; they cannot be scored")
    rgb = images[..., :3] if images.shape[-1] >= 3 else images.expand(*images.shape[:-1], 3)
    return list((rgb.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())


def _features(output: Any) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projection; 4.x a tensor.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def image_embeddings(manager: ModelManager, scorer: ClipScorer, images: torch.Tensor) -> torch.Tensor:
    """IMAGE [B, H, W, C] -> L2-normalised image embeddings [B, D], float32 on the CPU."""
    proc = processor(manager, scorer)
    chunks = []
    with manager.use(scorer.ref) as (model,), torch.inference_mode():
        device, dtype = model.device, model.dtype
        arrays = to_uint8_images(images)
        for start in range(0, len(arrays), IMAGE_CHUNK):
            # channels_last said outright: transformers guesses channels-first for an image 1 or 3 px tall
            pixels = proc(images=arrays[start:start + IMAGE_CHUNK], return_tensors="pt",
                          input_data_format="channels_last")["pixel_values"]
            chunks.append(_features(model.get_image_features(pixel_values=pixels.to(device, dtype))).float().cpu())
    embeds = torch.cat(chunks)
    return embeds / embeds.norm(dim=-1, keepdim=True)


def text_embeddings(manager: ModelManager, scorer: ClipScorer, texts: list[str]) -> torch.Tensor:
    """Prompts -> L2-normalised text embeddings [T, D], float32 on the CPU (truncated to 77 tokens)."""
    proc = processor(manager, scorer)
    with manager.use(scorer.ref) as (model,), torch.inference_mode():
        max_length = min(MAX_TEXT_TOKENS, int(model.config.text_config.max_position_embeddings))
        tokens = proc(text=texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        tokens = {k: v.to(model.device) for k, v in tokens.items()}
        embeds = _features(model.get_text_features(**tokens)).float().cpu()
    return embeds / embeds.norm(dim=-1, keepdim=True)


def logit_scale(manager: ModelManager, scorer: ClipScorer) -> float:
    """``logit_scale.exp()`` of the model (100 for trained CLIP/PickScore)."""
    with manager.use(scorer.ref) as (model,):
        return float(model.logit_scale.detach().float().exp())


def scaled_similarity(manager: ModelManager, scorer: ClipScorer, images: torch.Tensor, prompt: str) -> torch.Tensor:
    """``logit_scale.exp()`` x cosine similarity of each image ([B, H, W, C] float 0..1) with
    ``prompt``: [B] float32. This is PickScore's score (Kirstain et al. 2023) for a PickScore model,
    and 100 x cosine for a trained CLIP."""
    text = text_embeddings(manager, scorer, [prompt])
    pictures = image_embeddings(manager, scorer, images)
    return logit_scale(manager, scorer) * (text @ pictures.T)[0]
