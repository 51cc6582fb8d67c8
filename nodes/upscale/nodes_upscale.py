"""UpscaleModelLoader and ImageUpscaleWithModel (ComfyUI's names, inputs and outputs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from graph_runtime.context import Context, HookContext
from graph_runtime.node import Int, Link, ModelFile, Node, Output

from nodes.infra.files import file_identity
from nodes.infra.model_manager import ModelManager, manager_from
from nodes.infra.tiling import halve_on_oom, tiled_apply
from nodes.upscale.spandrel_models import UpscaleModel, load_upscale_model

DEFAULT_TILE = 512  # ComfyUI's tile and overlap for ImageUpscaleWithModel
DEFAULT_OVERLAP = 32
Progress = Callable[[int, int], None]


def upscale_image(manager: ModelManager, model: UpscaleModel, image: torch.Tensor, *, tile_size: int = DEFAULT_TILE,
                  overlap: int = DEFAULT_OVERLAP, on_progress: Progress | None = None) -> torch.Tensor:
    """IMAGE [B, H, W, C] float 0..1 -> [B, H*scale, W*scale, C'] float32 0..1 on the CPU.

    Each image is run in overlapping tiles of ``tile_size`` input pixels (rounded down to the
    architecture's size multiple; the whole image for architectures that tile internally or
    discourage tiling, until memory runs out), halving the tile size on out-of-memory down to 128
    px. ``on_progress(done, total)`` counts tiles over the batch. Raises ValueError when the
    image's channels are not the model's, TileMemoryError when even 128 px tiles do not fit."""
    info = model.info
    batch, height, width, channels = image.shape
    if channels != info.input_channels:
        raise ValueError(f"the image has {channels} channels but {model.name} ({info.architecture}) takes "
                         f"{info.input_channels}")
    pixels = image.movedim(-1, 1)
    start_tile = max(height, width) if info.tiling != "SUPPORTED" else tile_size
    with manager.use(model.ref) as (network,), torch.inference_mode():
        parameter = next(network.parameters())
        device, dtype = parameter.device, parameter.dtype

        def run_tile(tile: torch.Tensor) -> torch.Tensor:
            return network(tile.to(device, dtype))

        def run_all(tile: int) -> torch.Tensor:
            tile = max(tile // info.multiple_of * info.multiple_of, info.multiple_of)
            outputs = []
            for index in range(batch):
                def report(done: int, total: int, index: int = index) -> None:
                    if on_progress is not None:
                        on_progress(index * total + done, batch * total)
                outputs.append(tiled_apply(run_tile, pixels[index:index + 1], tile=tile, overlap=overlap,
                                           scale=info.scale, on_tile=report))
            return torch.cat(outputs)

        upscaled = halve_on_oom(run_all, start_tile)
    require_finite(upscaled, model, dtype)
    return upscaled.clamp(0, 1).movedim(1, -1).contiguous()


def require_finite(upscaled: torch.Tensor, model: UpscaleModel, dtype: torch.dtype) -> None:
    """Raise ValueError when the network put out NaN or infinity: clamping keeps NaN and saving
    turns it into black pixels, a broken result that would otherwise pass unnoticed."""
    finite = torch.isfinite(upscaled)
    if not bool(finite.all()):
        share = 1 - finite.float().mean().item()
        raise ValueError(f"{model.name} ({model.info.architecture}) put out NaN or infinite values in {share:.1%} of "
                         f"the pixels (running in {str(dtype).removeprefix('torch.')}): its weights may be corrupt, "
                         f"or it overflows at this precision")


class UpscaleModelLoader(Node):
    category = "loaders"
    display_name = "Load Upscale Model"
    description = ("Load an upscale model (ESRGAN/Real-ESRGAN, SwinIR, HAT, DAT, SPAN, … any architecture spandrel "
                   "identifies) from models/upscale_models, .pth or .safetensors.")
    inputs = [ModelFile("model_name", "upscale_models", tooltip="file in models/upscale_models")]
    outputs = [Output("UPSCALE_MODEL")]

    @classmethod
    def fingerprint(cls, ctx: HookContext, *, model_name: str | None = None, **_: Any) -> Any:
        try:
            return file_identity(ctx.folders.model_path("upscale_models", model_name or ""))[1:]
        except (OSError, ValueError):
            return None

    def run(self, ctx: Context, *, model_name: str) -> tuple[Any, ...]:
        path = ctx.folders.model_path("upscale_models", model_name)
        return (load_upscale_model(manager_from(ctx.services), path, label=model_name),)


class ImageUpscaleWithModel(Node):
    category = "image/upscaling"
    display_name = "Upscale Image (using Model)"
    description = ("Upscale images with an upscale model, in overlapping tiles blended with feathered edges; the "
                   "tile size halves when memory runs out (down to 128 px). Progress is reported per tile.")
    inputs = [Link("upscale_model", "UPSCALE_MODEL"), Link("image", "IMAGE"),
              Int("tile_size", DEFAULT_TILE, min=64, max=8192, step=8, optional=True,
                  tooltip="tile edge in input pixels (halved on out-of-memory)"),
              Int("overlap", DEFAULT_OVERLAP, min=0, max=4096, step=8, optional=True,
                  tooltip="input pixels shared by neighbouring tiles (at most half a tile)")]
    outputs = [Output("IMAGE")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        tile, overlap = widgets.get("tile_size"), widgets.get("overlap")
        if isinstance(tile, int) and isinstance(overlap, int) and overlap * 2 > tile:
            return f"overlap {overlap} is more than half of tile_size {tile}; use at most {tile // 2}"
        return None

    def run(self, ctx: Context, *, upscale_model: UpscaleModel, image: torch.Tensor, tile_size: int | None = None,
            overlap: int | None = None) -> tuple[Any, ...]:
        return (upscale_image(manager_from(ctx.services), upscale_model, image,
                              tile_size=DEFAULT_TILE if tile_size is None else tile_size,
                              overlap=DEFAULT_OVERLAP if overlap is None else overlap,
                              on_progress=lambda done, total: ctx.progress(done, total)),)


NODES: list[type[Node]] = [UpscaleModelLoader, ImageUpscaleWithModel]
