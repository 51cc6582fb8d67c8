"""LoRA-family files (kohya, LyCORIS and diffusers/peft key layouts) as weight patches on shared modules.

Like ComfyUI, a LoRA never changes the loaded model: a MODEL/CLIP carries a list of
(weights, strength) patches, and :func:`patched` adds each module's change (see
:mod:`nodes.diffusion.lora_variants` for LoRA, LoCon, LoHa, LoKr, DoRA and diffs) to the targeted
weights for the duration of one use, restoring the exact originals afterwards. So LoRAs stack,
strengths are per model and per text encoder, and the base model stays shared.

Nothing is dropped silently: :func:`resolve` returns every key it did not use, with the reason,
and refuses a file whose tensors do not fit the model's shapes.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nodes.diffusion.lora_variants import GLUED_ROLES, ROLES, ModulePatch, build
from nodes.infra.files import ModelFileError, read_state_dict

Tensor = torch.Tensor
ADAPTER_METADATA_KEY = "lora_adapter_metadata"  # diffusers' LORA_ADAPTER_METADATA_KEY (peft LoraConfig, JSON)
COMPONENT_TITLES = {"unet": "UNet", "text_encoder": "text encoder", "text_encoder_2": "text encoder 2"}


@dataclass(frozen=True)
class Patch:
    """One LoRA applied to one module tree: module path -> change, with its strength."""

    weights: dict[str, ModulePatch]
    strength: float


@dataclass(frozen=True)
class LoraFile:
    """A LoRA file's tensors as component -> module name in the file -> role -> tensor."""

    name: str
    modules: dict[str, dict[str, dict[str, Tensor]]]
    keys: dict[tuple[str, str, str], str]  # (component, module, role) -> the key in the file
    unknown: list[str]  # keys in no layout we know
    adapter_configs: dict[str, dict[str, Any]]  # component -> peft LoraConfig from the metadata


@dataclass
class Resolved:
    """What :func:`resolve` made of one component: the patch weights and what was left out."""

    weights: dict[str, ModulePatch] = field(default_factory=dict)
    kinds: Counter[str] = field(default_factory=Counter)
    ignored_modules: int = 0
    ignored: list[str] = field(default_factory=list)  # "key (reason)"


_KOHYA_PREFIXES = {"lora_unet_": "unet", "lycoris_": "unet", "lora_te_": "text_encoder",
                   "lora_te1_": "text_encoder", "lora_te2_": "text_encoder_2"}
_COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
_SUFFIXES = sorted(ROLES.items(), key=lambda item: -len(item[0]))
_LEGACY_TE = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out.0": "out_proj"}


def read_lora(path: Path) -> LoraFile:
    """Read and group a LoRA file's tensors; a file with no LoRA key at all is an error."""
    sd, metadata = read_state_dict(path)
    modules: dict[str, dict[str, dict[str, Tensor]]] = {}
    keys: dict[tuple[str, str, str], str] = {}
    unknown: list[str] = []
    for key, value in sd.items():
        parsed = _parse_key(key)
        if parsed is None:
            unknown.append(key)
            continue
        component, module, role = parsed
        modules.setdefault(component, {}).setdefault(module, {})[role] = value
        keys[parsed] = key
    if not modules:
        raise ModelFileError(f"{Path(path).name} holds no LoRA weights in a known format (kohya/LyCORIS lora_unet_/"
                             f"lora_te_ keys or diffusers unet./text_encoder. lora_A/lora_B keys); "
                             f"its keys are e.g. {unknown[:3]}")
    return LoraFile(Path(path).name, modules, keys, unknown, _adapter_configs(metadata, Path(path).name))


def _parse_key(key: str) -> tuple[str, str, str] | None:
    for prefix, component in _KOHYA_PREFIXES.items():
        if key.startswith(prefix):
            name, _, suffix = key[len(prefix):].partition(".")
            role = ROLES.get(suffix)
            return (component, "kohya:" + name, role) if role else None
    component, rest = "unet", key  # ComfyUI also reads diffusers keys saved without "unet."
    head, _, tail = key.partition(".")
    if head in _COMPONENTS:
        component, rest = head, tail
    for suffix, role in GLUED_ROLES.items():
        if rest.endswith(suffix):
            return component, rest[: -len(suffix)], role
    for suffix, role in _SUFFIXES:
        if rest.endswith("." + suffix):
            return component, rest[: -len(suffix) - 1], role
    return None


def _adapter_configs(metadata: dict[str, str], name: str) -> dict[str, dict[str, Any]]:
    raw = metadata.get(ADAPTER_METADATA_KEY)
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{name}: its {ADAPTER_METADATA_KEY} metadata is not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise ModelFileError(f"{name}: its {ADAPTER_METADATA_KEY} metadata is not a JSON object")
    configs = {c: {k[len(c) + 1:]: v for k, v in config.items() if k.startswith(c + ".")} for c in _COMPONENTS}
    if "lora_alpha" in config:  # a UNet adapter saved on its own: unprefixed
        configs["unet"] = config
    for component, values in configs.items():
        problem = _config_problem(values)
        if problem:
            raise ModelFileError(f"{name}: its {ADAPTER_METADATA_KEY} metadata for the {COMPONENT_TITLES[component]} "
                                 f"is not a LoRA config peft can load: {problem}")
    return {c: v for c, v in configs.items() if v}


def _config_problem(config: dict[str, Any]) -> str | None:
    """Why the values :func:`_peft_alpha` reads from a peft LoraConfig are unusable, or None
    (checked when the file is read, so a bad value is named rather than failing mid-resolve)."""
    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    def rank(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    if "lora_alpha" in config and not number(config["lora_alpha"]):
        return f"lora_alpha is {config['lora_alpha']!r}, not a number"
    if "r" in config and not rank(config["r"]):
        return f"r is {config['r']!r}, not a positive whole number"
    for key, valid in (("alpha_pattern", number), ("rank_pattern", rank)):
        patterns = config.get(key) or {}
        if not isinstance(patterns, dict):
            return f"{key} is {patterns!r}, not an object of module patterns"
        for pattern, value in patterns.items():
            if not valid(value):
                return f"{key}[{pattern!r}] is {value!r}"
            try:
                re.compile(rf"(.*\.)?({pattern})$")  # as _peft_alpha matches it
            except re.error as exc:
                return f"{key} has the pattern {pattern!r}, not a regular expression ({exc})"
    return None


def _peft_alpha(config: dict[str, Any], module: str, rank: int) -> float | None:
    """The alpha giving peft's scaling (``lora_alpha / r``, or ``/ sqrt(r)`` with rsLoRA) at ``rank``."""
    if "lora_alpha" not in config:
        return None

    def pattern_value(patterns: Any, default: Any) -> Any:
        for pattern, value in (patterns or {}).items():  # peft's get_pattern_key
            if re.match(rf"(.*\.)?({pattern})$", module):
                return value
        return default

    alpha = float(pattern_value(config.get("alpha_pattern"), config["lora_alpha"]))
    r = int(pattern_value(config.get("rank_pattern"), config.get("r", rank)))
    scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    return scaling * rank


def resolve(lora: LoraFile, component: str, module: torch.nn.Module | None, *,
            ldm_names: dict[str, str] | None = None) -> Resolved:
    """Map ``component``'s modules in ``lora`` onto ``module``'s submodules (None: the model has no
    such component). Unused keys come back in ``ignored`` with the reason; tensors whose shapes
    do not fit the model raise :class:`ModelFileError` naming the file, the module and both shapes."""
    result = Resolved()
    raw = lora.modules.get(component, {})
    title = COMPONENT_TITLES[component]
    aliases, underscored = _names(module, ldm_names) if module is not None else ({}, {})
    mismatches: list[str] = []
    broken: list[str] = []
    for raw_name, parts in raw.items():
        keys = {role: lora.keys[(component, raw_name, role)] for role in parts}
        target = _target(raw_name, aliases, underscored) if module is not None else None
        if target is None:
            reason = f"the model has no {title}" if module is None else f"no such module in the {title}"
            result.ignored_modules += 1
            result.ignored += [f"{key} ({reason})" for key in keys.values()]
            continue
        problem = _bad_values(parts, keys)
        if problem:
            broken.append(problem)
            continue
        alpha = None
        if "down" in parts and component in lora.adapter_configs:
            alpha = _peft_alpha(lora.adapter_configs[component], raw_name, int(parts["down"].shape[0]))
        patch = build(parts, alpha)
        unused = sorted(set(parts) - (patch.roles if patch else set()))
        result.ignored += [f"{keys[role]} (not a complete LoRA/LoHa/LoKr/diff set)" for role in unused]
        if patch is None:
            result.ignored_modules += 1
            continue
        problem = patch.defect()
        if problem:
            broken.append(f"{raw_name.removeprefix('kohya:')}: {problem}")
            continue
        sub = module.get_submodule(target)  # type: ignore[union-attr]
        problem = patch.check(sub.weight, getattr(sub, "bias", None))
        if problem:
            mismatches.append(f"{raw_name.removeprefix('kohya:')} -> {target}: {problem}")
            continue
        result.weights[target] = patch
        result.kinds[patch.kind] += 1
    if broken:
        raise ModelFileError(f"LoRA {lora.name} is damaged: {len(broken)} {title} module(s) cannot be applied, "
                             f"e.g. {'; '.join(broken[:3])}")
    if mismatches:
        raise ModelFileError(f"LoRA {lora.name} does not fit the {title}: {len(mismatches)} module(s) have other "
                             f"shapes (a LoRA for another model family?), e.g. {'; '.join(mismatches[:3])}")
    return result


def _bad_values(parts: dict[str, Tensor], keys: dict[str, str]) -> str | None:
    """Why a module's tensors cannot be used whatever the model (an alpha that is not one number,
    NaN or inf values, which would turn every image black), or None."""
    if "alpha" in parts and parts["alpha"].numel() != 1:
        return f"{keys['alpha']} has shape {list(parts['alpha'].shape)}, not one number"
    for role, tensor in parts.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor.float()).all()):  # fp8 has no isfinite
            return f"{keys[role]} holds NaN or infinite values"
    return None


def _names(module: torch.nn.Module, ldm_names: dict[str, str] | None) -> tuple[dict[str, str], dict[str, str]]:
    names = {name for name, sub in module.named_modules() if hasattr(sub, "weight")}
    aliases = {name: name for name in names}
    for name in names:  # transformers 5 CLIPTextModel lost the "text_model." files still carry
        if name.startswith(("encoder.", "embeddings.", "final_layer_norm")):
            aliases.setdefault("text_model." + name, name)
    underscored = {alias.replace(".", "_"): name for alias, name in aliases.items()}
    for ldm, diffusers_name in (ldm_names or {}).items():
        underscored.setdefault(ldm.replace(".", "_"), diffusers_name)
    return aliases, underscored


def _target(raw_name: str, names: dict[str, str], underscored: dict[str, str]) -> str | None:
    if raw_name.startswith("kohya:"):
        return underscored.get(raw_name[len("kohya:"):])
    # diffusers' old attention-processor format: "attn1.processor.to_q" is "attn1.to_q"
    name = re.sub(r"processor\.(to_[qkv]|to_out)(_lora)?$", lambda m: m.group(1), raw_name)
    name = re.sub(r"\.to_out$", ".to_out.0", name)
    if name in names:
        return names[name]
    for candidate in (f"text_model.{name}", name):  # text encoders saved without "text_model."
        te_name = candidate
        for old, new in _LEGACY_TE.items():
            te_name = re.sub(rf"\.{re.escape(old)}$", f".{new}", te_name)
        if te_name in names:
            return names[te_name]
    return None


def describe(name: str, resolved: dict[str, Resolved], unknown: Sequence[str], skipped: Sequence[str] = (), *,
             limit: int | None = None) -> str:
    """One line per LoRA: modules matched and ignored per component (by kind), then the ignored
    keys with the reason (the first ``limit`` of them; all when None)."""
    parts = []
    for component, res in resolved.items():
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(res.kinds.items()))
        parts.append(f"{COMPONENT_TITLES[component]} {len(res.weights)} matched" + (f" ({kinds})" if kinds else "")
                     + f", {res.ignored_modules} ignored")
    ignored = [item for res in resolved.values() for item in res.ignored] + [f"{k} (unknown key)" for k in unknown]
    if skipped:
        parts.append(f"not applied here: {', '.join(COMPONENT_TITLES[c] for c in skipped)}")
    if ignored:
        shown = ignored if limit is None else ignored[:limit]
        more = f", and {len(ignored) - len(shown)} more" if len(shown) < len(ignored) else ""
        parts.append(f"{len(ignored)} key(s) ignored: " + ", ".join(shown) + more)
    return f"LoRA {name}: " + "; ".join(parts)


@contextlib.contextmanager
def patched(module: torch.nn.Module, patches: Sequence[Patch]) -> Iterator[torch.nn.Module]:
    """``module`` with ``patches`` added to its weights (and biases), restored bit-exactly on exit."""
    backups: dict[tuple[str, str], Tensor] = {}
    try:
        with torch.no_grad():
            for patch in patches:
                if patch.strength == 0:
                    continue
                for path, change in patch.weights.items():
                    sub = module.get_submodule(path)
                    bias = getattr(sub, "bias", None) if change.bias is not None else None
                    for attr, tensor in (("weight", sub.weight), ("bias", bias)):
                        if tensor is not None and (path, attr) not in backups:
                            backups[(path, attr)] = tensor.detach().clone()
                    change.apply(sub.weight, bias, patch.strength)
        yield module
    finally:
        with torch.no_grad():
            for (path, attr), original in backups.items():
                getattr(module.get_submodule(path), attr).copy_(original)
