"""Loader nodes: checkpoints, diffusers folders, VAEs, LoRAs, CLIP layer selection."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from graph_runtime.context import Context, HookContext
from graph_runtime.folders import FolderPaths
from graph_runtime.node import Float, Int, Link, ModelFile, Node, Output, Result

from nodes.diffusion import loading
from nodes.infra import ldm_keys
from nodes.diffusion.lora import Patch, Resolved, describe, read_lora, resolve
from nodes.infra.files import ModelFileError
from nodes.infra.model_manager import manager_from
from nodes.diffusion.models import ClipModel, DiffusionModel

log = logging.getLogger(__name__)


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


def _apply_lora(ctx: Context, lora_name: str, model: DiffusionModel, clip: ClipModel | None, strength_model: float,
                strength_clip: float) -> tuple[DiffusionModel, ClipModel | None, str]:
    """The model and CLIP with the LoRA's patches, and the report: modules matched and ignored,
    every ignored key by name (also logged). Nothing matched at all is an error naming the file."""
    lora = read_lora(Path(ctx.folders.model_path("loras", lora_name)))
    manager = manager_from(ctx.services)
    resolved: dict[str, Resolved] = {}
    skipped = [c for c in lora.modules if (c == "unet" and strength_model == 0)
               or (c != "unet" and (clip is None or strength_clip == 0))]
    if strength_model != 0 and "unet" in lora.modules:
        unet = manager.ensure_loaded(model.ref)
        resolved["unet"] = resolve(lora, "unet", unet, ldm_names=_unet_ldm_names(unet))
        if resolved["unet"].weights:
            model = model.with_patch(Patch(resolved["unet"].weights, strength_model))
    if clip is not None and strength_clip != 0:
        components = ["text_encoder" if index == 0 else f"text_encoder_{index + 1}" for index in range(len(clip.refs))]
        patches: list[Patch | None] = []
        for component, ref in zip(components, clip.refs):
            if component in lora.modules:
                resolved[component] = resolve(lora, component, manager.ensure_loaded(ref))
            weights = resolved[component].weights if component in resolved else {}
            patches.append(Patch(weights, strength_clip) if weights else None)
        for component in lora.modules.keys() - {"unet", *components}:
            resolved[component] = resolve(lora, component, None)
        clip = clip.with_patches(patches)
    text = describe(lora_name, resolved, lora.unknown, skipped, limit=20)
    # Only parts the file has and the strengths apply count: a text-encoder LoRA at strength_clip 0
    # (or through LoraLoaderModelOnly) is skipped as the report says, not "matches no module".
    if resolved and not any(res.weights for res in resolved.values()):
        raise ModelFileError(f"LoRA {lora_name} matches no module of this model: "
                             f"{describe(lora_name, resolved, lora.unknown, skipped, limit=5)}")
    ignored = bool(lora.unknown) or any(res.ignored for res in resolved.values())
    log.log(logging.WARNING if ignored else logging.INFO, "%s", describe(lora_name, resolved, lora.unknown, skipped))
    return model, clip, text


class LoraLoader(Node):
    category = "loaders"
    description = ("Apply a LoRA-family file (LoRA, LoCon, LoHa, LoKr, DoRA, diffs; kohya, LyCORIS or diffusers/peft "
                   "keys) to the diffusion model and the text encoder(s) with separate strengths. Stackable; the "
                   "shared base model is never modified. Shows modules matched and every key ignored.")
    inputs = [Link("model", "MODEL"), Link("clip", "CLIP"), ModelFile("lora_name", "loras"),
              Float("strength_model", 1.0, min=-100.0, max=100.0, step=0.01),
              Float("strength_clip", 1.0, min=-100.0, max=100.0, step=0.01)]
    outputs = [Output("MODEL"), Output("CLIP")]

    @classmethod
    def fingerprint(cls, ctx: HookContext, *, lora_name: str | None = None, **_: Any) -> Any:
        return _file_fingerprint(ctx.folders, "loras", lora_name)

    def run(self, ctx: Context, *, model: DiffusionModel, clip: ClipModel, lora_name: str,
            strength_model: float, strength_clip: float) -> Result:
        model, patched_clip, text = _apply_lora(ctx, lora_name, model, clip, strength_model, strength_clip)
        return Result(outputs=(model, patched_clip), ui={"text": [text]})


class LoraLoaderModelOnly(Node):
    category = "loaders"
    description = "Apply a LoRA-family file to the diffusion model only. Shows modules matched and keys ignored."
    inputs = [Link("model", "MODEL"), ModelFile("lora_name", "loras"),
              Float("strength_model", 1.0, min=-100.0, max=100.0, step=0.01)]
    outputs = [Output("MODEL")]

    @classmethod
    def fingerprint(cls, ctx: HookContext, *, lora_name: str | None = None, **_: Any) -> Any:
        return _file_fingerprint(ctx.folders, "loras", lora_name)

    def run(self, ctx: Context, *, model: DiffusionModel, lora_name: str, strength_model: float) -> Result:
        model, _, text = _apply_lora(ctx, lora_name, model, None, strength_model, 0.0)
        return Result(outputs=(model,), ui={"text": [text]})


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
