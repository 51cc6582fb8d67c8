"""Loader nodes: checkpoints, diffusers folders, VAEs, LoRAs, CLIP layer selection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graph_runtime.context import Context, HookContext
from graph_runtime.folders import FolderPaths
from graph_runtime.node import Float, Int, Link, ModelFile, Node, Output

from nodes.diffusion import loading
from nodes.infra import ldm_keys
from nodes.diffusion.lora import Patch, read_lora, resolve
from nodes.infra.model_manager import manager_from
from nodes.diffusion.models import ClipModel, DiffusionModel


def _file_fingerprint(folders: FolderPaths, folder: str, name: str | None) -> Any:
    """mtime and size of the chosen file: a replaced file is loaded again."""
    if not name:
        return None
    try:
        path = folders.model_path(folder, name)
        target = path / "model_index.json" if path.is_dir() else path
        stat = target.stat()
        return (stat.st_mtime_ns, stat.st_size)
    except (OSError, ValueError):
        return None


class CheckpointLoaderSimple(Node):
    category = "loaders"
    description = ("Load a single-file SD1.x/SD2.x/SDXL checkpoint (.safetensors, or .ckpt loaded weights-only) "
                   "from models/checkpoints. The CLIP tokenizer comes with NodeLoom: nothing else to download.")
    inputs = [ModelFile("ckpt_name", "checkpoints", tooltip="checkpoint file in models/checkpoints")]
    outputs = [Output("MODEL"), Output("CLIP"), Output("VAE")]

    @classmethod
    def fingerprint(cls, ctx: HookContext, *, ckpt_name: str | None = None, **_: Any) -> Any:
        return _file_fingerprint(ctx.folders, "checkpoints", ckpt_name)

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        """The checkpoint's tokenizer must be there before anything loads (the message says what
        to put where); ``ckpt_name`` itself is checked against the folder as usual."""
        return loading.tokenizer_problem(ctx.folders, widgets.get("ckpt_name"))

    def run(self, ctx: Context, *, ckpt_name: str) -> tuple[Any, ...]:
        path = ctx.folders.model_path("checkpoints", ckpt_name)
        return loading.load_checkpoint_models(manager_from(ctx.services), path,
                                              tokenizer_root=loading.tokenizer_root_for(ctx.folders), label=ckpt_name)


class DiffusersLoader(Node):
    category = "loaders"
    description = "Load a diffusers pipeline folder (model_index.json) from models/diffusers."
    inputs = [ModelFile("model_path", "diffusers")]
    outputs = [Output("MODEL"), Output("CLIP"), Output("VAE")]

    @classmethod
    def fingerprint(cls, ctx: HookContext, *, model_path: str | None = None, **_: Any) -> Any:
        return _file_fingerprint(ctx.folders, "diffusers", model_path)

    def run(self, ctx: Context, *, model_path: str) -> tuple[Any, ...]:
        folder = ctx.folders.model_path("diffusers", model_path)
        return loading.load_diffusers_models(manager_from(ctx.services), folder, label=model_path)


class VAELoader(Node):
    category = "loaders"
    description = "Load a standalone VAE (original or diffusers key layout) from models/vae."
    inputs = [ModelFile("vae_name", "vae")]
    outputs = [Output("VAE")]

    @classmethod
    def fingerprint(cls, ctx: HookContext, *, vae_name: str | None = None, **_: Any) -> Any:
        return _file_fingerprint(ctx.folders, "vae", vae_name)

    def run(self, ctx: Context, *, vae_name: str) -> tuple[Any, ...]:
        path = ctx.folders.model_path("vae", vae_name)
        return (loading.load_vae_model(manager_from(ctx.services), path, label=vae_name),)


def _unet_ldm_names(unet: Any) -> dict[str, str]:
    """LDM module name -> diffusers module name, for kohya SDXL LoRAs named after SGM blocks."""
    params = {k: k for k in unet.state_dict() if k.endswith(".weight")}
    renamed = ldm_keys.unet_to_ldm(params, dict(unet.config))  # type: ignore[arg-type]
    return {ldm[: -len(".weight")]: diffusers[: -len(".weight")] for ldm, diffusers in renamed.items()}


def _model_patch(ctx: Context, model: DiffusionModel, raw: dict[str, Any], strength: float, name: str) -> DiffusionModel:
    if strength == 0 or "unet" not in raw:
        return model
    manager = manager_from(ctx.services)
    unet = manager.ensure_loaded(model.ref)
    weights = resolve(raw["unet"], unet, ldm_names=_unet_ldm_names(unet), what=f"the UNet ({name})")
    return model.with_patch(Patch(weights, strength))


def _clip_patch(ctx: Context, clip: ClipModel, raw: dict[str, Any], strength: float, name: str) -> ClipModel:
    if strength == 0:
        return clip
    manager = manager_from(ctx.services)
    patches: list[Patch | None] = []
    for index, ref in enumerate(clip.refs):
        component = "text_encoder" if index == 0 else f"text_encoder_{index + 1}"
        if component not in raw:
            patches.append(None)
            continue
        weights = resolve(raw[component], manager.ensure_loaded(ref), what=f"the {component} ({name})")
        patches.append(Patch(weights, strength))
    return clip.with_patches(patches)


def _read(ctx: Context, lora_name: str) -> dict[str, Any]:
    return read_lora(Path(ctx.folders.model_path("loras", lora_name)))


class LoraLoader(Node):
    category = "loaders"
    description = ("Apply a LoRA (kohya or diffusers/peft format) to the diffusion model and the text encoder(s) "
                   "with separate strengths. Stackable; the shared base model is never modified.")
    inputs = [Link("model", "MODEL"), Link("clip", "CLIP"), ModelFile("lora_name", "loras"),
              Float("strength_model", 1.0, min=-100.0, max=100.0, step=0.01),
              Float("strength_clip", 1.0, min=-100.0, max=100.0, step=0.01)]
    outputs = [Output("MODEL"), Output("CLIP")]

    @classmethod
    def fingerprint(cls, ctx: HookContext, *, lora_name: str | None = None, **_: Any) -> Any:
        return _file_fingerprint(ctx.folders, "loras", lora_name)

    def run(self, ctx: Context, *, model: DiffusionModel, clip: ClipModel, lora_name: str,
            strength_model: float, strength_clip: float) -> tuple[Any, ...]:
        raw = _read(ctx, lora_name)
        return (_model_patch(ctx, model, raw, strength_model, lora_name),
                _clip_patch(ctx, clip, raw, strength_clip, lora_name))


class LoraLoaderModelOnly(Node):
    category = "loaders"
    description = "Apply a LoRA to the diffusion model only."
    inputs = [Link("model", "MODEL"), ModelFile("lora_name", "loras"),
              Float("strength_model", 1.0, min=-100.0, max=100.0, step=0.01)]
    outputs = [Output("MODEL")]

    @classmethod
    def fingerprint(cls, ctx: HookContext, *, lora_name: str | None = None, **_: Any) -> Any:
        return _file_fingerprint(ctx.folders, "loras", lora_name)

    def run(self, ctx: Context, *, model: DiffusionModel, lora_name: str, strength_model: float) -> tuple[Any, ...]:
        return (_model_patch(ctx, model, _read(ctx, lora_name), strength_model, lora_name),)


class CLIPSetLastLayer(Node):
    category = "conditioning"
    description = "Stop the text encoder at an earlier layer (-1 = last, -2 = penultimate: 'clip skip 2')."
    inputs = [Link("clip", "CLIP"), Int("stop_at_clip_layer", -1, min=-24, max=-1, step=1)]
    outputs = [Output("CLIP")]

    def run(self, ctx: Context, *, clip: ClipModel, stop_at_clip_layer: int) -> tuple[Any, ...]:
        from dataclasses import replace

        return (replace(clip, layer=stop_at_clip_layer),)


NODES: list[type[Node]] = [CheckpointLoaderSimple, DiffusersLoader, VAELoader, LoraLoader, LoraLoaderModelOnly,
                           CLIPSetLastLayer]
