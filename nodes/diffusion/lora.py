"""LoRA files (kohya and diffusers/peft key formats) as weight patches on shared modules.

Like ComfyUI, a LoRA never changes the loaded model: a MODEL/CLIP carries a list of
(weights, strength) patches, and :func:`patched` adds ``strength * alpha/rank * up @ down`` to the
targeted weights for the duration of one use, restoring the exact originals afterwards. So LoRAs
stack, strengths are per model and per text encoder, and the base model stays shared.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from nodes.infra.files import ModelFileError, read_state_dict

Tensor = torch.Tensor
# component -> module path -> (down, up, scale = alpha / rank)
LoraWeights = dict[str, dict[str, tuple[Tensor, Tensor, float]]]


@dataclass(frozen=True)
class Patch:
    """One LoRA applied to one module, with its strength."""

    weights: dict[str, tuple[Tensor, Tensor, float]]
    strength: float


_KOHYA_PREFIXES = {"lora_unet_": "unet", "lora_te_": "text_encoder", "lora_te1_": "text_encoder",
                   "lora_te2_": "text_encoder_2"}
_LEGACY_ATTN = {"to_q_lora": "to_q", "to_k_lora": "to_k", "to_v_lora": "to_v", "to_out_lora": "to_out.0"}
_LEGACY_TE = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out.0": "out_proj"}


def read_lora(path: Path) -> dict[str, dict[str, dict[str, Tensor]]]:
    """Group a LoRA file's tensors as component -> raw module name -> {down, up, alpha}."""
    sd, _ = read_state_dict(path)
    grouped: dict[str, dict[str, dict[str, Tensor]]] = {}
    for key, value in sd.items():
        parsed = _parse_key(key)
        if parsed is None:
            continue
        component, module, role = parsed
        grouped.setdefault(component, {}).setdefault(module, {})[role] = value
    if not grouped:
        raise ModelFileError(f"{Path(path).name} holds no LoRA weights in a known format (kohya lora_unet_/"
                             f"lora_te_ keys or diffusers unet./text_encoder. lora_A/lora_B keys)")
    return grouped


def _parse_key(key: str) -> tuple[str, str, str] | None:
    for prefix, component in _KOHYA_PREFIXES.items():
        if key.startswith(prefix):
            name, _, rest = key[len(prefix):].partition(".")
            role = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha"}.get(rest)
            return (component, "kohya:" + name, role) if role else None
    match = re.match(r"^(unet|text_encoder|text_encoder_2)\.(.+)\.(lora_A|lora_B|lora\.down|lora\.up|lora_down|lora_up)\.weight$", key)
    if match:
        component, module, kind = match.groups()
        role = "down" if kind in ("lora_A", "lora.down", "lora_down") else "up"
        return component, module, role
    match = re.match(r"^(unet|text_encoder|text_encoder_2)\.(.+)\.alpha$", key)
    if match:
        return match.group(1), match.group(2), "alpha"
    return None


def resolve(raw: dict[str, dict[str, Tensor]], module: torch.nn.Module, *, ldm_names: dict[str, str] | None = None,
            what: str = "") -> dict[str, tuple[Tensor, Tensor, float]]:
    """Map a component's raw LoRA module names onto ``module``'s submodules; names that match
    nothing are an error (a LoRA for another architecture)."""
    names = {name for name, sub in module.named_modules() if hasattr(sub, "weight")}
    aliases = {name: name for name in names}
    for name in names:  # transformers 5 CLIPTextModel lost the "text_model." files still carry
        if name.startswith(("encoder.", "embeddings.", "final_layer_norm")):
            aliases.setdefault("text_model." + name, name)
    underscored = {alias.replace(".", "_"): name for alias, name in aliases.items()}
    for ldm, diffusers_name in (ldm_names or {}).items():
        underscored.setdefault(ldm.replace(".", "_"), diffusers_name)
    resolved: dict[str, tuple[Tensor, Tensor, float]] = {}
    unknown: list[str] = []
    for raw_name, parts in raw.items():
        target = _target(raw_name, aliases, underscored)
        if target is None or "down" not in parts or "up" not in parts:
            unknown.append(raw_name)
            continue
        down, up = parts["down"].float(), parts["up"].float()
        rank = down.shape[0]
        alpha = float(parts["alpha"]) if "alpha" in parts else float(rank)
        resolved[target] = (down, up, alpha / rank)
    if unknown:
        raise ModelFileError(f"LoRA does not fit {what or 'this model'}: {len(unknown)} module(s) not found, "
                             f"e.g. {unknown[:3]}")
    return resolved


def _target(raw_name: str, names: dict[str, str], underscored: dict[str, str]) -> str | None:
    if raw_name.startswith("kohya:"):
        return underscored.get(raw_name[len("kohya:"):])
    name = raw_name
    for legacy, modern in _LEGACY_ATTN.items():  # diffusers' old attention-processor format
        name = name.replace(f"processor.{legacy}", modern).replace(legacy, modern)
    if name in names:
        return names[name]
    for candidate in (f"text_model.{name}", name):  # text encoders saved without "text_model."
        te_name = candidate
        for old, new in _LEGACY_TE.items():
            te_name = re.sub(rf"\.{re.escape(old)}$", f".{new}", te_name)
        if te_name in names:
            return names[te_name]
    return None


@contextlib.contextmanager
def patched(module: torch.nn.Module, patches: Sequence[Patch]) -> Iterator[torch.nn.Module]:
    """``module`` with ``patches`` added to its weights, restored bit-exactly on exit."""
    backups: dict[str, Tensor] = {}
    try:
        with torch.no_grad():
            for patch in patches:
                if patch.strength == 0:
                    continue
                for path, (down, up, scale) in patch.weights.items():
                    weight = module.get_submodule(path).weight
                    if path not in backups:
                        backups[path] = weight.detach().clone()
                    delta = (up.flatten(1).to(weight.device) @ down.flatten(1).to(weight.device)).reshape(weight.shape)
                    weight.add_(delta.to(weight.dtype), alpha=scale * patch.strength)
        yield module
    finally:
        with torch.no_grad():
            for path, original in backups.items():
                module.get_submodule(path).weight.copy_(original)
