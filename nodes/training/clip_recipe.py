"""The TrainCLIP recipe: a small transformers ``CLIPModel`` trained contrastively from scratch on a
DATASET's images and captions, on the shared loop (:mod:`nodes.training.loop`).

Loss: CLIP's symmetric InfoNCE (Radford et al. 2021, "Learning Transferable Visual Models From
Natural Language Supervision", Fig. 3) over the batch's L2-normalised image and text embeddings,
logits scaled by a learned temperature ``logit_scale.exp()`` (initialised at 1/0.07 and clipped to
100, as the paper). A procedural dataset has few distinct captions, so a batch often holds the same
caption several times: the images whose captions are equal are all positives for each other
(multi-positive targets, each row's target spread evenly over its positives, as StableRep's
multi-positive contrastive loss, Tian et al. 2023), not false negatives the loss would push apart.
Captions are the dataset's own, template applied; its ``caption_dropout`` (meant for a denoiser's
classifier-free guidance) does not apply here: an empty caption has no image to match.

Images are the dataset's pixels in -1..1, which is exactly what the saved processor
(mean = std = 0.5) makes of a 0..1 image at the training resolution; text is tokenized by the
caption vocabulary (:func:`nodes.infra.tokenizer.caption_vocab`) padded with ``<|endoftext|>`` to
77 tokens, as CLIPTextEncode feeds the text tower.

The DATASET is read through :class:`nodes.training.dataset.ImageCaptionDataset`'s interface:
``items`` (with ``caption``), ``caption_template``, ``buckets()``, ``sample_indexed`` and
``fixed_pixels``/``item_pixels`` (a dataclass with ``random_crop``/``flip`` when not fixed).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from nodes.training.loop import FinalOutputs, seeded
from nodes.training.run_folder import RunFolder

MAX_TOKENS = 77
MAX_LOGIT_SCALE = math.log(100.0)
PREVIEW_CAPTIONS = 16  # distinct captions the preview's retrieval accuracy is measured on
IMAGE_MEAN = (0.5, 0.5, 0.5)  # the dataset's -1..1 pixels are (x - 0.5) / 0.5 of 0..1 images
IMAGE_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class CLIPOptions:
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 2
    vision_width: int = 128
    vision_layers: int = 2
    vision_heads: int = 2
    patch_size: int = 4
    projection_dim: int = 128
    batch_size: int = 64
    seed: int = 0


def captions_of(dataset: Any) -> list[str]:
    """Every item's caption as trained (the dataset's template applied), in item order."""
    return [dataset.caption_template.replace("{caption}", item.caption) for item in dataset.items]


def dataset_problem(dataset: Any, patch_size: int) -> str | None:
    """Why ``dataset`` cannot train a CLIP with ``patch_size`` patches, or None."""
    sizes = sorted(dataset.buckets())
    if len(sizes) != 1 or sizes[0][0] != sizes[0][1]:
        return (f"its images are trained at {', '.join(f'{w}x{h}' for w, h in sizes)}; the vision tower needs one "
                f"square size: load it without aspect_buckets")
    if sizes[0][0] % patch_size:
        return f"its resolution {sizes[0][0]} is not divisible by patch_size {patch_size}"
    captions = captions_of(dataset)
    if not any(c.strip() for c in captions):
        return "it has no captions (captions 'none'): contrastive training matches images to their captions"
    if len(set(captions)) < 2:
        return f"all its images have the same caption {captions[0]!r}: there is nothing to tell apart"
    return None


def multi_positive_clip_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor,
                             groups: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of L2-normalised ``image_embeds``/``text_embeds`` [B, D] where sample i's
    positives are every j with ``groups[j] == groups[i]`` (equal captions): cross-entropy of the
    softmax over the batch against targets spread evenly over the positives, averaged over the
    image->text and text->image directions. With distinct captions this is CLIP's loss exactly."""
    logits = logit_scale.exp() * image_embeds @ text_embeds.T
    positives = (groups[:, None] == groups[None, :]).to(logits.dtype)
    targets = positives / positives.sum(dim=1, keepdim=True)
    image_to_text = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    text_to_image = -(targets * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return (image_to_text + text_to_image) / 2


def clip_config(options: CLIPOptions, resolution: int, tokenizer: Any) -> Any:
    """A CLIPConfig: quick-GELU towers with 4x MLPs (OpenAI CLIP's), text context 77, the
    tokenizer's vocabulary and special ids (the pooled text output is read at ``<|endoftext|>``)."""
    from transformers import CLIPConfig

    text = {"hidden_size": options.text_width, "intermediate_size": 4 * options.text_width,
            "num_attention_heads": options.text_heads, "num_hidden_layers": options.text_layers,
            "max_position_embeddings": MAX_TOKENS, "vocab_size": len(tokenizer), "hidden_act": "quick_gelu",
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id, "projection_dim": options.projection_dim}
    vision = {"hidden_size": options.vision_width, "intermediate_size": 4 * options.vision_width,
              "num_attention_heads": options.vision_heads, "num_hidden_layers": options.vision_layers,
              "image_size": resolution, "patch_size": options.patch_size, "hidden_act": "quick_gelu",
              "projection_dim": options.projection_dim}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=options.projection_dim)


def token_ids(tokenizer: Any, captions: list[str]) -> torch.Tensor:
    """[N, 77] ids: ``<|startoftext|>`` caption ``<|endoftext|>`` then padding. Raises ValueError
    naming a caption longer than the context (it would be cut short, silently, otherwise)."""
    from nodes.infra.tokenizer import clean_text

    encoded = tokenizer([clean_text(c) for c in captions], padding="max_length", max_length=MAX_TOKENS)["input_ids"]
    for caption, ids in zip(captions, encoded):
        if len(ids) > MAX_TOKENS:
            raise ValueError(f"dataset: the caption {caption[:60]!r} is {len(ids) - 2} tokens; CLIP's context holds "
                             f"{MAX_TOKENS - 2}")
    return torch.tensor(encoded, dtype=torch.long)


class CLIPRecipe:
    """The loop's Recipe for one CLIPModel (see :mod:`nodes.training.loop`). ``tokenizer_dir``
    holds the caption vocabulary; ``scorer_dir`` and ``tokenizer_target`` are written at the end."""

    def __init__(self, dataset: Any, options: CLIPOptions, tokenizer_dir: Path, scorer_dir: Path,
                 tokenizer_target: Path, device: torch.device) -> None:
        from transformers import CLIPModel

        from nodes.infra.tokenizer import load_tokenizer

        self.dataset, self.options, self.device = dataset, options, device
        self.tokenizer_dir, self.scorer_dir, self.tokenizer_target = tokenizer_dir, scorer_dir, tokenizer_target
        self.tokenizer = load_tokenizer(str(tokenizer_dir))
        self.resolution = sorted(dataset.buckets())[0][0]
        with seeded(options.seed):
            self.model = CLIPModel(clip_config(options, self.resolution, self.tokenizer)).to(device).train()
        captions = captions_of(dataset)
        distinct = sorted(set(captions))
        self.caption_ids = token_ids(self.tokenizer, distinct)
        eos = self.caption_ids == self.tokenizer.eos_token_id
        self.lengths = eos.int().argmax(dim=1) + 1  # up to and with each caption's first <|endoftext|>
        index = {caption: number for number, caption in enumerate(distinct)}
        self.group_of = [index[c] for c in captions]  # item -> number of its caption
        # One image per caption (its first item) for the preview's retrieval accuracy.
        first = {g: i for i, g in reversed(list(enumerate(self.group_of)))}
        self.probe = [(g, first[g]) for g in sorted(first)][:PREVIEW_CAPTIONS]
        self.accuracy: float | None = None

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        return dict(self.model.named_parameters())

    def batch(self, step: int, micro: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        indices, pixels, _ = self.dataset.sample_indexed(self.options.batch_size, generator)
        return pixels, torch.tensor([self.group_of[i] for i in indices])

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor], step: int) -> torch.Tensor:
        pixels, groups = (t.to(self.device) for t in batch)
        # Each distinct caption of the batch goes through the text tower once, cut after the
        # longest one's <|endoftext|>: attention is causal and the pooled output is read there, so
        # the padding after it changes nothing in the loss (exactly) and would cost 77/length times more.
        distinct, inverse = groups.unique(return_inverse=True)
        length = int(self.lengths[distinct.cpu()].max())
        image, text = self._embed(pixels, self.caption_ids[distinct.cpu(), :length].to(self.device))
        return multi_positive_clip_loss(image, text[inverse], self.model.logit_scale, groups)

    def after_step(self, step: int) -> None:
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    def _embed(self, pixels: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(input_ids=ids, pixel_values=pixels)
        return out.image_embeds, out.text_embeds  # L2-normalised by CLIPModel

    def retrieval(self) -> tuple[torch.Tensor, list[bool]]:
        """The probe images [N, 3, H, W] (-1..1, centre crops) and, for each, whether its caption
        is the nearest of the N probe captions (top-1 image->caption; chance 1/N)."""
        groups = [g for g, _ in self.probe]
        view = self.dataset if self.dataset.fixed_pixels else dataclasses.replace(
            self.dataset, random_crop=False, flip=False)
        pixels = torch.stack([view.item_pixels(i) for _, i in self.probe]).to(self.device)
        was_training = self.model.training
        self.model.eval()
        image, text = self._embed(pixels, self.caption_ids.to(self.device)[groups])
        self.model.train(was_training)
        hits = (image @ text.T).argmax(dim=1).cpu() == torch.arange(len(groups))
        return pixels.cpu(), hits.tolist()

    def preview(self, step: int) -> torch.Tensor:
        """[H, W, 3] 0..1: the probe images in a grid, each over a green (its caption retrieved
        first) or red bar, under a line giving the top-1 accuracy."""
        pixels, hits = self.retrieval()
        self.accuracy = sum(hits) / len(hits)
        return retrieval_strip(pixels, hits)

    def save_final(self, folder: RunFolder) -> FinalOutputs:
        from transformers import CLIPImageProcessor, CLIPProcessor

        size = self.resolution
        processor = CLIPProcessor(
            image_processor=CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                               image_mean=list(IMAGE_MEAN), image_std=list(IMAGE_STD)),
            tokenizer=self.tokenizer)
        staging = self.scorer_dir.with_name(f".{self.scorer_dir.name}.writing")
        shutil.rmtree(staging, ignore_errors=True)
        self.model.to("cpu").save_pretrained(staging, safe_serialization=True)
        processor.save_pretrained(staging)
        replace_folder(staging, self.scorer_dir)
        staging = self.tokenizer_target.with_name(f".{self.tokenizer_target.name}.writing")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(self.tokenizer_dir, staging)
        replace_folder(staging, self.tokenizer_target)
        files = [self.scorer_dir / "config.json", self.scorer_dir / "model.safetensors",
                 self.tokenizer_target / "vocab.json", self.tokenizer_target / "merges.txt"]
        return FinalOutputs({"scorer_name": self.scorer_dir.name, "tokenizer_name": self.tokenizer_target.name,
                             "retrieval_top1": self.accuracy}, files)


def replace_folder(staging: Path, target: Path) -> None:
    """Move the finished ``staging`` folder to ``target``, replacing an older one (a reader sees
    the old folder or the new, never a half-written one; only the swap itself is not atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def retrieval_strip(pixels: torch.Tensor, hits: list[bool], cell: int = 48, columns: int = 4) -> torch.Tensor:
    """[H, W, 3] 0..1: ``pixels`` [N, 3, h, w] (-1..1) in a grid of ``cell`` px, a green/red bar
    under each for ``hits``, and ``top-1 k/N`` written above."""
    from PIL import Image, ImageDraw

    count = len(hits)
    columns = min(columns, count)
    rows = -(-count // columns)
    canvas = Image.new("RGB", (max(cell * columns, 150), 14 + rows * (cell + 8)), "white")
    draw = ImageDraw.Draw(canvas)
    for index, (image, hit) in enumerate(zip(pixels, hits)):
        left, top = index % columns * cell, 14 + index // columns * (cell + 8)
        array = ((image.permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).numpy()
        canvas.paste(Image.fromarray(array).resize((cell - 2, cell - 2), Image.Resampling.NEAREST), (left, top))
        draw.rectangle([left, top + cell, left + cell - 3, top + cell + 4], fill=(40, 170, 60) if hit else (210, 50, 40))
    draw.text((2, 1), f"top-1 {sum(hits)}/{count} (chance {100 / count:.0f}%)", fill=(0, 0, 0))
    return torch.from_numpy(np.array(canvas)).float() / 255
