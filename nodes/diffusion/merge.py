"""Merged MODELs: another UNet blended into a shared one per parameter, lazily, like a LoRA patch.

A merge never builds a third UNet. ``ModelMergeSimple``, ``ModelMergeBlocks`` and
``FuseModelsLayerwise`` return model1's MODEL with one more entry in its patch list, a
:class:`MergePatch` that names the other MODEL (itself a file reference plus its own patches) and,
per UNet parameter, the coefficients ``(keep, take)`` of

    w = keep · w_model1 + take · w_model2        (computed in fp32, stored in the parameter's dtype)

Nothing is computed until the MODEL is used (sampled or saved). During one use, the parameters
with a coefficient pair other than (1, 0) are backed up, blended in place and restored bit-exactly
afterwards, exactly as LoRA patches are; parameters model1 keeps whole cost nothing. Patches apply
in order, so a LoRA added before the merge changes model1's side of it and one added after changes
the merged weights (ComfyUI's order). The other MODEL is used with its own patches (a LoRA on
model2 is part of what is merged in); when it shares the UNet module with this MODEL (a model
merged with a LoRA'd copy of itself), its weights are copied before this MODEL's patches touch
the module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from nodes.diffusion.lora import Patch, patched
from nodes.infra.model_manager import ModelManager

if TYPE_CHECKING:
    from nodes.diffusion.models import DiffusionModel

Tensor = torch.Tensor


@dataclass(frozen=True, eq=False)
class MergePatch:
    """Blend ``other``'s UNet in: parameter name -> (keep, take); names absent keep model1's value."""

    other: DiffusionModel
    coefficients: Mapping[str, tuple[float, float]]


AnyPatch = Patch | MergePatch


def float_state(unet: torch.nn.Module) -> dict[str, Tensor]:
    """The UNet's floating-point parameters and buffers by state-dict name (the tensors themselves)."""
    return {name: tensor for name, tensor in unet.state_dict(keep_vars=True).items() if tensor.is_floating_point()}


def blend(mine: Tensor, theirs: Tensor, keep: float, take: float) -> Tensor:
    """``keep · mine + take · theirs`` in fp32, in ``mine``'s dtype (the per-parameter formula)."""
    return (mine.float() * keep + theirs.float() * take).to(mine.dtype)


def shares_module(model: DiffusionModel, key: tuple[Any, ...]) -> bool:
    """Whether ``model`` or any model merged into it uses the module under manager ``key``."""
    return model.ref.key == key or any(shares_module(p.other, key) for p in model.patches if isinstance(p, MergePatch))


def other_weights(manager: ModelManager, patch: MergePatch, *, copy: bool) -> contextlib.AbstractContextManager[dict[str, Tensor]]:
    """The other MODEL's (patched) tensors for the blended names, live or copied."""
    @contextlib.contextmanager
    def live() -> Iterator[dict[str, Tensor]]:
        with patch.other.use(manager) as unet:
            state = float_state(unet)
            yield {name: state[name] for name in patch.coefficients}

    if not copy:
        return live()
    with live() as state:
        copied = {name: tensor.detach().clone() for name, tensor in state.items()}
    return contextlib.nullcontext(copied)


@contextlib.contextmanager
def blended(unet: torch.nn.Module, patch: MergePatch, source: contextlib.AbstractContextManager[dict[str, Tensor]]
            ) -> Iterator[torch.nn.Module]:
    """``unet`` with ``patch`` blended into its weights, restored bit-exactly on exit."""
    state = float_state(unet)
    backups: dict[str, Tensor] = {}
    try:
        with torch.no_grad(), source as theirs:
            for name, (keep, take) in patch.coefficients.items():
                mine = state[name]
                backups[name] = mine.detach().clone()
                mine.copy_(blend(mine, theirs[name].to(mine.device), keep, take))
        yield unet
    finally:
        with torch.no_grad():
            for name, original in backups.items():
                state[name].copy_(original)


@contextlib.contextmanager
def applied(unet: torch.nn.Module, manager: ModelManager, patches: Sequence[AnyPatch], *,
            key: tuple[Any, ...]) -> Iterator[torch.nn.Module]:
    """``unet`` (the module under manager ``key``) with ``patches`` applied in order."""
    if not any(isinstance(p, MergePatch) for p in patches):
        with patched(unet, patches) as module:  # type: ignore[arg-type]
            yield module
        return
    # Copies of merged-in weights that live in this very module, taken while it is still pristine.
    sources = {index: other_weights(manager, p, copy=True) for index, p in enumerate(patches)
               if isinstance(p, MergePatch) and shares_module(p.other, key)}
    with contextlib.ExitStack() as stack:
        loras: list[Patch] = []
        for index, p in enumerate(patches):
            if isinstance(p, Patch):
                loras.append(p)
                continue
            stack.enter_context(patched(unet, loras))
            loras = []
            stack.enter_context(blended(unet, p, sources.get(index) or other_weights(manager, p, copy=False)))
        stack.enter_context(patched(unet, loras))
        yield unet
