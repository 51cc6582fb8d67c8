"""Text encoding and conditioning nodes (ComfyUI names and inputs), plus PromptTemplate."""

from __future__ import annotations

from typing import Any

import torch

from graph_runtime.context import Context, HookContext
from graph_runtime.node import Combo, Float, Int, Link, Node, Output, String

from nodes.diffusion.embeddings import Embeddings
from nodes.diffusion.families import DEFAULT_FAMILY, family
from nodes.diffusion.models import ClipModel, Conditioning
from nodes.infra.model_manager import manager_from
from nodes.inputs import MAX_RESOLUTION


class CLIPTextEncode(Node):
    category = "conditioning"
    description = ("Encode a prompt. ComfyUI weighting: (word:1.2), ((word)), \\( \\) escapes; prompts longer "
                   "than 77 tokens are encoded in chunks; embedding:name inserts a textual inversion from "
                   "models/embeddings (a missing one is an error). SDXL: both encoders and the pooled output.")
    inputs = [String("text", multiline=True, dynamicPrompts=True), Link("clip", "CLIP")]
    outputs = [Output("CONDITIONING")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        return _check_embeddings(ctx, widgets.get("text"))

    def run(self, ctx: Context, *, text: str, clip: ClipModel) -> tuple[Any, ...]:
        embeds, pooled = clip.encode(manager_from(ctx.services), text, embeddings=Embeddings.of(ctx.folders))
        return ([[embeds, {"pooled_output": pooled}]],)


class CLIPTextEncodeSDXL(Node):
    category = "advanced/conditioning"
    description = "SDXL encode with separate prompts per encoder and the size/crop conditioning."
    inputs = [Link("clip", "CLIP"),
              Int("width", 1024, min=0, max=MAX_RESOLUTION), Int("height", 1024, min=0, max=MAX_RESOLUTION),
              Int("crop_w", 0, min=0, max=MAX_RESOLUTION), Int("crop_h", 0, min=0, max=MAX_RESOLUTION),
              Int("target_width", 1024, min=0, max=MAX_RESOLUTION),
              Int("target_height", 1024, min=0, max=MAX_RESOLUTION),
              String("text_g", multiline=True, dynamicPrompts=True), String("text_l", multiline=True, dynamicPrompts=True)]
    outputs = [Output("CONDITIONING")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        return _check_embeddings(ctx, widgets.get("text_g")) or _check_embeddings(ctx, widgets.get("text_l"))

    def run(self, ctx: Context, *, clip: ClipModel, width: int, height: int, crop_w: int, crop_h: int,
            target_width: int, target_height: int, text_g: str, text_l: str) -> tuple[Any, ...]:
        if not family(clip.family).size_conditioning:
            raise ValueError(f"CLIPTextEncodeSDXL needs an SDXL CLIP, got a {clip.family} one")
        embeds, pooled = clip.encode(manager_from(ctx.services), text_g, text_l=text_l,
                                     embeddings=Embeddings.of(ctx.folders))
        extras = {"pooled_output": pooled, "width": width, "height": height, "crop_w": crop_w, "crop_h": crop_h,
                  "target_width": target_width, "target_height": target_height}
        return ([[embeds, extras]],)


def _check_embeddings(ctx: HookContext, text: Any) -> str | None:
    """A typed prompt's missing embeddings, reported before anything loads."""
    return Embeddings.of(ctx.folders).check(text) if isinstance(text, str) else None


class ConditioningCombine(Node):
    category = "conditioning"
    description = "Use both conditionings: their predictions are averaged at every step."
    inputs = [Link("conditioning_1", "CONDITIONING"), Link("conditioning_2", "CONDITIONING")]
    outputs = [Output("CONDITIONING")]

    def run(self, ctx: Context, *, conditioning_1: Conditioning, conditioning_2: Conditioning) -> tuple[Any, ...]:
        return (conditioning_1 + conditioning_2,)


class ConditioningConcat(Node):
    category = "conditioning"
    description = "Append conditioning_from's tokens to every entry of conditioning_to."
    inputs = [Link("conditioning_to", "CONDITIONING"), Link("conditioning_from", "CONDITIONING")]
    outputs = [Output("CONDITIONING")]

    def run(self, ctx: Context, *, conditioning_to: Conditioning, conditioning_from: Conditioning) -> tuple[Any, ...]:
        extra = conditioning_from[0][0]
        return ([[torch.cat([embeds, extra.to(embeds.dtype)], dim=1), dict(extras)]
                 for embeds, extras in conditioning_to],)


class ConditioningSetArea(Node):
    category = "conditioning"
    description = "Restrict a conditioning to a rectangle (pixels, multiples of 8) with a strength."
    inputs = [Link("conditioning", "CONDITIONING"),
              Int("width", 64, min=64, max=MAX_RESOLUTION, step=8), Int("height", 64, min=64, max=MAX_RESOLUTION, step=8),
              Int("x", 0, min=0, max=MAX_RESOLUTION, step=8), Int("y", 0, min=0, max=MAX_RESOLUTION, step=8),
              Float("strength", 1.0, min=0.0, max=10.0, step=0.01)]
    outputs = [Output("CONDITIONING")]

    def run(self, ctx: Context, *, conditioning: Conditioning, width: int, height: int, x: int, y: int,
            strength: float) -> tuple[Any, ...]:
        scale = DEFAULT_FAMILY.vae_scale_factor  # no model input: the default family's cells, as ComfyUI
        area = (height // scale, width // scale, y // scale, x // scale)  # ComfyUI's order, in latent cells
        return ([[embeds, dict(extras, area=area, strength=strength)] for embeds, extras in conditioning],)


# name -> (positive template with {prompt}, negative preset)
PROMPT_TEMPLATES: dict[str, tuple[str, str]] = {
    "none": ("{prompt}", ""),
    "storyboard": ("storyboard panel, rough pencil sketch of {prompt}, black and white, loose lines, thumbnail",
                   "color, photo, realistic, detailed shading, text, watermark, blurry"),
    "photographic": ("photograph of {prompt}, 50mm, natural lighting, highly detailed",
                     "drawing, painting, cartoon, low quality, blurry, watermark"),
    "cinematic": ("cinematic still of {prompt}, dramatic lighting, shallow depth of field, film grain",
                  "cartoon, drawing, low quality, blurry, watermark"),
    "line art": ("line art drawing of {prompt}, clean lines, simple, white background",
                 "color, photo, shading, blurry, watermark"),
    "watercolor": ("watercolor painting of {prompt}, soft colors, paper texture",
                   "photo, 3d render, low quality, blurry, watermark"),
    "product shot": ("product shot of {prompt}, studio background, soft light, high detail",
                     "cluttered background, low quality, blurry, watermark, text"),
}


class PromptTemplate(Node):
    category = "conditioning/prompt"
    description = ("Wrap a prompt in a style template ('{prompt}' marks where it goes) and give the style's "
                   "negative-prompt preset, as style fine-tunes are prompted (e.g. storyboard thumbnails). "
                   "A non-empty custom_template overrides the chosen style's template.")
    inputs = [Combo("style", list(PROMPT_TEMPLATES), default="none"), String("prompt", multiline=True),
              String("negative_prompt", multiline=True, tooltip="appended to the style's negative preset"),
              String("custom_template", optional=True, tooltip="e.g. 'a storyboard frame of {prompt}'")]
    outputs = [Output("STRING", "positive"), Output("STRING", "negative")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        custom = widgets.get("custom_template")
        if custom and "{prompt}" not in custom:
            return "custom_template must contain {prompt}"
        return None

    def run(self, ctx: Context, *, style: str, prompt: str, negative_prompt: str,
            custom_template: str | None = None) -> tuple[Any, ...]:
        template, negative = PROMPT_TEMPLATES[style]
        template = custom_template or template
        positive = template.replace("{prompt}", prompt.strip())
        negatives = ", ".join(part for part in (negative, negative_prompt.strip()) if part)
        return (positive, negatives)


NODES: list[type[Node]] = [CLIPTextEncode, CLIPTextEncodeSDXL, ConditioningCombine, ConditioningConcat,
                           ConditioningSetArea, PromptTemplate]
