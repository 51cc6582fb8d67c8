"""From a model file to MODEL/CLIP/VAE values, through the shared ModelManager.

The same file (path, mtime, size) is loaded once per process; what each file is (family,
scheduler config, tokenizers) is remembered in the manager's bounded ``descriptions`` cache so
evicted modules reload without asking. Each part gets its load policy here: the VAE stays fp32
(SD/SDXL VAEs overflow in fp16) and only the UNet is compiled.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nodes.diffusion import checkpoint, diffusers_folder
from nodes.diffusion.checkpoint import Components
from nodes.diffusion.families import family
from nodes.diffusion.models import ClipModel, DiffusionModel, VaeModel
from nodes.infra.model_manager import LoadPolicy, ModelManager, ModelRef
from nodes.infra.files import ModelFileError
from nodes.infra.tokenizer import MissingTokenizer, find_tokenizer_dir

TokenizerRoot = Callable[[str], Path]

PART_POLICIES: dict[str, LoadPolicy] = {
    "unet": LoadPolicy(),
    "vae": LoadPolicy(dtype=torch.float32, compile=False),
    "text_encoder": LoadPolicy(compile=False),
    "text_encoder_2": LoadPolicy(compile=False),
}


def part_ref(group: tuple[Any, ...], part: str, loader: Callable[[], dict[str, Any]], label: str) -> ModelRef:
    return ModelRef(group, part, loader, label, policy=PART_POLICIES.get(part, LoadPolicy()),
                    part_policies=PART_POLICIES)


def file_group(kind: str, path: Path) -> tuple[Any, ...]:
    stat = Path(path).stat()
    return (kind, str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


def _components_loader(manager: ModelManager, group: tuple[Any, ...],
                       load: Callable[[], Components]) -> Callable[[], dict[str, Any]]:
    def loader() -> dict[str, Any]:
        comp = load()
        # Keep only the description: the modules live in the manager.
        spec = dict(comp.spec)
        if comp.vae is not None:
            spec["vae"] = dict(comp.vae.config)
        spec["has_vae"] = comp.vae is not None
        manager.descriptions.put(group, Components(family=comp.family, spec=spec, tokenizer_dirs=comp.tokenizer_dirs))
        parts: dict[str, Any] = {}
        if comp.unet is not None:
            parts["unet"] = comp.unet
        if comp.vae is not None:
            parts["vae"] = comp.vae
        for te, encoder in zip(family(comp.family).text_encoders, comp.text_encoders):
            parts[te.part] = encoder
        return parts
    return loader


def _description(manager: ModelManager, group: tuple[Any, ...], loader: Callable[[], dict[str, Any]]) -> Components:
    """The remembered description; a file whose description was dropped (bounded cache, /free)
    while its modules stayed resident is read again."""
    comp = manager.descriptions.get(group)
    if comp is None:
        loader()
        comp = manager.descriptions.get(group)
    return comp


def part_dtypes(manager: ModelManager) -> dict[str, torch.dtype]:
    """The dtype each part of a checkpoint is read into (the manager's choice per part policy)."""
    return {part: manager.load_dtype(policy) for part, policy in PART_POLICIES.items()}


def load_checkpoint_models(manager: ModelManager, path: Path, *, tokenizer_root: TokenizerRoot,
                           label: str = "") -> tuple[DiffusionModel, ClipModel, VaeModel | None]:
    """MODEL, CLIP, VAE of a single-file checkpoint (all loaded now, so errors show here)."""
    group = file_group("checkpoint", path)
    loader = _components_loader(manager, group, lambda: checkpoint.load_checkpoint(
        path, tokenizer_root=tokenizer_root, dtypes=part_dtypes(manager)))
    return _values(manager, group, loader, label or Path(path).name)


def load_diffusers_models(manager: ModelManager, folder: Path, *, label: str = "") -> tuple[DiffusionModel, ClipModel, VaeModel | None]:
    group = file_group("diffusers", Path(folder) / "model_index.json")
    loader = _components_loader(manager, group, lambda: diffusers_folder.load_diffusers_folder(
        folder, dtypes=part_dtypes(manager)))
    return _values(manager, group, loader, label or Path(folder).name)


def _values(manager: ModelManager, group: tuple[Any, ...], loader: Callable[[], dict[str, Any]],
            label: str) -> tuple[DiffusionModel, ClipModel, VaeModel | None]:
    unet_ref = part_ref(group, "unet", loader, label)
    manager.ensure_loaded(unet_ref)
    comp = _description(manager, group, loader)
    spec = comp.spec
    encoders = family(comp.family).text_encoders
    te_refs = tuple(unet_ref.sibling(te.part) for te in encoders)
    # The family's pad per encoder; a diffusers folder's own tokenizer files may name another.
    pads = [spec.get(te.part.replace("text_encoder", "tokenizer"), {}).get("pad_token", te.pad_token) for te in encoders]
    model = DiffusionModel(ref=unet_ref, family=comp.family, scheduler_config=dict(spec["scheduler"]))
    clip = ClipModel(family=comp.family, refs=te_refs, tokenizer_dirs=tuple(str(d) for d in comp.tokenizer_dirs),
                     pad_tokens=tuple(pads), force_zeros_for_empty_prompt=bool(spec.get("force_zeros_for_empty_prompt")))
    vae_ref = unet_ref.sibling("vae")
    # Built from the remembered config: under a tight budget the module may already be evicted.
    vae = vae_value(vae_ref, spec["vae"]) if spec.get("has_vae") else None
    for ref in te_refs:
        manager.ensure_loaded(ref)
    return model, clip, vae


def vae_value(ref: ModelRef, config: dict[str, Any]) -> VaeModel:
    """The VAE value of a VAE config: an AutoencoderKL's (its downscale from its depth) or a
    parameter-free one's (its ``factor``)."""
    downscale = int(config["factor"]) if "factor" in config else 2 ** (len(config["block_out_channels"]) - 1)
    return VaeModel(ref=ref, scaling_factor=float(config.get("scaling_factor", 0.18215)),
                    shift_factor=float(config.get("shift_factor") or 0.0),
                    latent_channels=int(config.get("latent_channels", 4)), downscale=downscale)


def load_vae_model(manager: ModelManager, path: Path, *, label: str = "") -> VaeModel:
    group = file_group("vae", path)

    def loader() -> dict[str, Any]:
        return {"vae": checkpoint.load_vae_file(path)[0]}

    ref = part_ref(group, "vae", loader, label or Path(path).name)
    return vae_value(ref, dict(manager.ensure_loaded(ref).config))


def tokenizer_root_for(folders: Any) -> TokenizerRoot:
    """Where a checkpoint's named tokenizer is: models/clip_tokenizer/<name> when the user put one
    there, else (the default name) the one built from the shipped BPE vocabulary."""
    def root(name: str) -> Path:
        return find_tokenizer_dir(name, folders.model_dirs("clip_tokenizer"))
    return root


def tokenizer_problem(folders: Any, ckpt_name: str | None) -> str | None:
    """Why the tokenizer a checkpoint needs is not available (what to put where), or None; reads
    the file's header only, so validation reports it before anything loads."""
    try:
        path = folders.model_path("checkpoints", ckpt_name or "")
    except (OSError, ValueError):
        return None  # the missing file is reported by the input's own check
    try:
        name = checkpoint.tokenizer_name(path)
    except ModelFileError:
        name = None  # an unreadable file is reported when it loads; the default tokenizer is checked
    try:
        find_tokenizer_dir(name, folders.model_dirs("clip_tokenizer"))
    except MissingTokenizer as exc:
        return str(exc)
    return None
