"""CheckpointSave (ComfyUI's name and inputs): MODEL + CLIP + VAE -> one single-file checkpoint.

The file is what CheckpointLoaderSimple, ComfyUI and A1111 load: every part in the original
(LDM/SGM) key layout under its usual prefix (``model.diffusion_model.``, ``first_stage_model.``,
``cond_stage_model.transformer.`` / ``cond_stage_model.model.`` / ``conditioner.embedders.N.``), the
renaming done by :mod:`nodes.infra.ldm_keys`, the inverse of diffusers' single-file converters. The
weights are the MODEL's and CLIP's as they sample, patches included (LoRAs, merges), in the dtype
the modules are held in. The metadata carries ComfyUI's ``prompt`` and extra_pnginfo entries and
NodeLoom's ``nodeloom_config`` (architecture and scheduler configs, so non-standard sizes and a
ModelSamplingDiscrete prediction type reload as they were).

SD2 files hold one text-encoder block more than conditioning runs (the loader drops it); the
loaded model never had it, so an identity block (all zeros: its residual branches add nothing) is
written in its place, with an identity ``text_projection``.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import torch

from graph_runtime.context import Context
from graph_runtime.node import Hidden, Link, Node, Result, String

from nodes.core.imaging import save_target
from nodes.diffusion.families import family
from nodes.diffusion.lora import patched
from nodes.diffusion.models import ClipModel, DiffusionModel, VaeModel
from nodes.diffusion.zoo.sd import plain_config, single_file_state
from nodes.infra.files import METADATA_KEY, save_safetensors
from nodes.infra.model_manager import ModelManager, manager_from
from nodes.infra.tokenizer import DEFAULT_TOKENIZER, MissingTokenizer, find_tokenizer_dir

Tensor = torch.Tensor


def checkpoint_state(manager: ModelManager, model: DiffusionModel, clip: ClipModel, vae: VaeModel,
                     unet: torch.nn.Module | None = None) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(LDM-layout state dict on the CPU, nodeloom_config spec) of the three parts as they run.
    ``unet``, when given, is saved instead of the MODEL's (a trained UNet of the MODEL's family,
    any size: its own config is recorded); the MODEL still gives the family and scheduler."""
    if clip.family != model.family:
        raise ValueError(f"clip is a {clip.family} text encoder and model a {model.family} UNet: save the parts of "
                         "one family together")
    fam = family(model.family)
    with contextlib.ExitStack() as stack:
        if unet is None:
            unet = stack.enter_context(model.use(manager))
        (vae_module,) = stack.enter_context(manager.use(vae.ref))
        encoders = stack.enter_context(manager.use(*clip.refs))
        for encoder, patches in zip(encoders, clip.patches or [() for _ in encoders]):
            stack.enter_context(patched(encoder, patches))
        # The class name tells a parameter-free VAE (no keys in the file) from an AutoencoderKL.
        vae_config = {"_class_name": type(vae_module).__name__, **plain_config(vae_module)}
        spec = {"family": fam.name, "unet": plain_config(unet), "vae": vae_config,
                "scheduler": dict(model.scheduler_config), "tokenizer_name": tokenizer_name(clip)}
        for te, encoder in zip(fam.text_encoders, encoders):
            spec[te.part] = json.loads(json.dumps(encoder.config.to_dict(), default=str))
        base = fam.shipped_config()
        spec.update({k: base[k] for k in ("tokenizer", "tokenizer_2", "force_zeros_for_empty_prompt") if k in base})
        # Copied while the patches are applied: they are undone when the modules are released.
        state = {k: v.detach().to("cpu", copy=True) for k, v in single_file_state(
            {"family": fam.name, "unet": unet, "vae": vae_module, "text_encoders": encoders}, spec).items()}
    for te in fam.text_encoders:
        if te.drop_last_block:
            state.update(_identity_block(state, te.ldm_prefix))
    return state, spec


def _identity_block(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The unused last OpenCLIP block of an SD2 file (zeros) and an identity text_projection."""
    blocks = prefix + "transformer.resblocks."
    last = max(int(k[len(blocks):].split(".")[0]) for k in state if k.startswith(blocks))
    source = f"{blocks}{last}."
    extra = {f"{blocks}{last + 1}." + k[len(source):]: torch.zeros_like(v) for k, v in state.items() if k.startswith(source)}
    width = state[prefix + "ln_final.weight"].shape[0]
    extra[prefix + "text_projection"] = torch.eye(width, dtype=state[prefix + "ln_final.weight"].dtype)
    extra[prefix + "logit_scale"] = torch.tensor(math.log(1 / 0.07))
    return extra


def tokenizer_name(clip: ClipModel) -> str:
    """The clip_tokenizer folder name the file asks for: the CLIP's own folder when it is a named
    one, else the default (OpenAI CLIP's, bundled)."""
    folder = Path(clip.tokenizer_dirs[0])
    try:
        if find_tokenizer_dir(folder.name, [folder.parent]) == folder:
            return folder.name
    except MissingTokenizer:
        pass
    return DEFAULT_TOKENIZER


class CheckpointSave(Node):
    category = "advanced/model_merging"
    display_name = "Save Checkpoint"
    description = ("Save MODEL, CLIP and VAE (with their LoRAs and merges applied) as one .safetensors checkpoint in "
                   "the original key layout, under output/ (default output/checkpoints/ComfyUI_00001_.safetensors). "
                   "Move it into models/checkpoints to load it with Load Checkpoint (also in ComfyUI and A1111).")
    output_node = True
    inputs = [Link("model", "MODEL"), Link("clip", "CLIP"), Link("vae", "VAE"),
              String("filename_prefix", "checkpoints/ComfyUI", path_in="output",
                     tooltip="file name under the output folder; sub-folders allowed"),
              Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO")]
    outputs = []

    def run(self, ctx: Context, *, model: DiffusionModel, clip: ClipModel, vae: VaeModel, filename_prefix: str,
            prompt: Any = None, extra_pnginfo: dict[str, Any] | None = None) -> Result:
        state, spec = checkpoint_state(manager_from(ctx.services), model, clip, vae)
        root = ctx.folders.directory_for("output")
        target = save_target(filename_prefix, root, 0, 0)
        path = target.folder / f"{target.filename}_{target.counter:05}_.safetensors"
        metadata = {"prompt": json.dumps(prompt) if prompt is not None else "", METADATA_KEY: json.dumps(spec)}
        metadata.update({key: json.dumps(value) for key, value in (extra_pnginfo or {}).items()})
        save_safetensors(state, path, metadata)
        relative = path.relative_to(root.resolve()).as_posix()
        return Result(ui={"text": [f"saved {relative}"]})


NODES: list[type[Node]] = [CheckpointSave]
