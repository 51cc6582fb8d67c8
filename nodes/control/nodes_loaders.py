"""ControlNetLoader and DiffControlNetLoader (ComfyUI names and inputs)."""

from __future__ import annotations

from typing import Any

from graph_runtime.context import Context, HookContext
from graph_runtime.node import InputSpec, Link, Node, Output

from nodes.control.loading import load_control_model
from nodes.diffusion.models import DiffusionModel
from nodes.infra.model_manager import manager_from

FOLDER = "controlnet"


def control_files(ctx: HookContext) -> list[str]:
    """Files in models/controlnet and the diffusers folders there (config.json), listed as the
    folder: the runtime's own listing, so the server validates against the same choices."""
    return ctx.folders.list_models(FOLDER)


def ControlFile(name: str) -> InputSpec:
    return InputSpec(name=name, type="COMBO", choices=control_files, model_folder=FOLDER,
                     tooltip="ControlNet or T2I-Adapter file or diffusers folder in models/controlnet")


def _fingerprint(ctx: HookContext, name: str | None) -> Any:
    if not name:
        return None
    try:
        path = ctx.folders.model_path(FOLDER, name)
        stat = (path / "config.json" if path.is_dir() else path).stat()
        return (stat.st_mtime_ns, stat.st_size)
    except (OSError, ValueError):
        return None


class ControlNetLoader(Node):
    category = "loaders"
    description = ("Load a ControlNet (SD1.x/SD2.x/SDXL; diffusers file or folder, or the original-layout "
                   "control_*.pth/.safetensors, fp16 pruned too) or a T2I-Adapter from models/controlnet.")
    inputs = [ControlFile("control_net_name")]
    outputs = [Output("CONTROL_NET")]

    @classmethod
    def fingerprint(cls, ctx: HookContext, *, control_net_name: str | None = None, **_: Any) -> Any:
        return _fingerprint(ctx, control_net_name)

    def run(self, ctx: Context, *, control_net_name: str) -> tuple[Any, ...]:
        path = ctx.folders.model_path(FOLDER, control_net_name)
        return (load_control_model(manager_from(ctx.services), path, name=control_net_name),)


class DiffControlNetLoader(Node):
    category = "loaders"
    description = ("ControlNetLoader for ComfyUI's \"diff\" ControlNets (a 'difference' key: weights stored as "
                   "the change from the base model, which is added here). Other files load as in ControlNetLoader.")
    inputs = [Link("model", "MODEL"), ControlFile("control_net_name")]
    outputs = [Output("CONTROL_NET")]

    @classmethod
    def fingerprint(cls, ctx: HookContext, *, control_net_name: str | None = None, **_: Any) -> Any:
        return _fingerprint(ctx, control_net_name)

    def run(self, ctx: Context, *, model: DiffusionModel, control_net_name: str) -> tuple[Any, ...]:
        manager = manager_from(ctx.services)
        path = ctx.folders.model_path(FOLDER, control_net_name)
        # The shared module without the model's LoRA patches: a diff ControlNet is relative to the base.
        unet = manager.ensure_loaded(model.ref)
        return (load_control_model(manager, path, name=control_net_name, base_unet=unet),)


NODES: list[type[Node]] = [ControlNetLoader, DiffControlNetLoader]
