"""Stand-ins declaring the schemas of ComfyUI core nodes (names, inputs and widget order as
ComfyUI's /object_info gives them), for the UI→API conversion tests. They compute on numbers, not
images: conversion only needs the schemas."""

from __future__ import annotations

from typing import Any

from graph_runtime import Combo, Context, Float, Int, Link, Node, Output, Result, String

UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
SAMPLERS = ["euler", "euler_ancestral", "dpmpp_2m"]
SCHEDULERS = ["normal", "karras", "simple"]


class LoadImage(Node):
    category = "image"
    inputs = [Combo("image", ["example.png", "photo.png"], image_upload=True)]
    outputs = [Output("IMAGE"), Output("MASK")]

    def run(self, ctx: Context, *, image: str) -> tuple[Any, Any]:
        return (image, None)


class ImageScale(Node):
    category = "image/upscaling"
    inputs = [Link("image", "IMAGE"), Combo("upscale_method", UPSCALE_METHODS),
              Int("width", 512, min=0, max=16384, step=1), Int("height", 512, min=0, max=16384, step=1),
              Combo("crop", ["disabled", "center"])]
    outputs = [Output("IMAGE")]

    def run(self, ctx: Context, **inputs: Any) -> tuple[Any]:
        return (inputs,)


class ImageInvert(Node):
    category = "image"
    inputs = [Link("image", "IMAGE")]
    outputs = [Output("IMAGE")]

    def run(self, ctx: Context, *, image: Any) -> tuple[Any]:
        return (image,)


class ImageBlur(Node):
    category = "image/postprocessing"
    inputs = [Link("image", "IMAGE"), Int("blur_radius", 1, min=1, max=31),
              Float("sigma", 1.0, min=0.1, max=10.0)]
    outputs = [Output("IMAGE")]

    def run(self, ctx: Context, *, image: Any, blur_radius: int, sigma: float) -> tuple[Any]:
        return (image,)


class SaveImage(Node):
    category = "image"
    output_node = True
    inputs = [Link("images", "IMAGE"), String("filename_prefix", "ComfyUI")]
    outputs = []

    def run(self, ctx: Context, *, images: Any, filename_prefix: str) -> Result:
        return Result(ui={"images": []})


class PreviewImage(Node):
    category = "image"
    output_node = True
    inputs = [Link("images", "IMAGE")]
    outputs = []

    def run(self, ctx: Context, *, images: Any) -> Result:
        return Result(ui={"images": []})


class KSampler(Node):
    """Only the widget layout matters here: seed has a control_after_generate companion."""

    category = "sampling"
    inputs = [Link("model", "MODEL"), Int("seed", 0, min=0, max=2**64 - 1, control_after_generate=True),
              Int("steps", 20, min=1, max=10000), Float("cfg", 8.0, min=0.0, max=100.0),
              Combo("sampler_name", SAMPLERS), Combo("scheduler", SCHEDULERS),
              Link("positive", "CONDITIONING"), Link("negative", "CONDITIONING"),
              Link("latent_image", "LATENT"), Float("denoise", 1.0, min=0.0, max=1.0)]
    outputs = [Output("LATENT")]

    def run(self, ctx: Context, **inputs: Any) -> tuple[Any]:
        return (inputs,)


class LoadImageMask(Node):
    """ComfyUI's layout: the upload button was appended after ``channel``, the last required input."""

    category = "mask"
    inputs = [Combo("image", ["example.png", "photo.png"], image_upload=True),
              Combo("channel", ["alpha", "red", "green", "blue"])]
    outputs = [Output("MASK")]

    def run(self, ctx: Context, **inputs: Any) -> tuple[Any]:
        return (inputs,)


class CycleCheckpoint(Node):
    """A custom-node layout: a COMBO with a control_after_generate widget (and, in older
    frontends, its control_filter_list text) before a FLOAT."""

    category = "loaders"
    inputs = [Combo("ckpt_name", ["a.safetensors", "b.safetensors"], control_after_generate=True),
              Float("strength", 1.0, min=0.0, max=2.0)]
    outputs = [Output("MODEL")]

    def run(self, ctx: Context, **inputs: Any) -> tuple[Any]:
        return (inputs,)


NODES: list[type[Node]] = [LoadImage, ImageScale, ImageInvert, ImageBlur, SaveImage, PreviewImage, KSampler,
                           LoadImageMask, CycleCheckpoint]
