"""Model merging: ComfyUI's ModelMergeSimple and ModelMergeBlocks, and FuseModelsLayerwise (EcomXL's
second stage: the fine-tuned UNet fused back into the original with per-block weights).

Each returns model1's (the base's) MODEL with a :class:`nodes.diffusion.merge.MergePatch`: no weights
are copied or computed until the MODEL is sampled or saved (see that module). The per-parameter
formulas, in fp32:

- ModelMergeSimple (ComfyUI ``comfy_extras/nodes_model_merging.py``): ``w = ratio·w1 + (1-ratio)·w2``;
  ratio 1 is model1 unchanged.
- ModelMergeBlocks: the same with the ratio of the parameter's block in the original (LDM) layout,
  which is what ComfyUI's key names are: ``input`` for ``input_blocks.*``, ``middle`` for
  ``middle_block.*``, ``out`` for ``output_blocks.*`` and the final ``out.*`` norm/conv (prefix
  ``out`` matches both, as in ComfyUI); the rest (time and label embeddings) takes ``input``'s,
  ComfyUI's default (its first block argument).
- ModelMergeSubtract / ModelMergeAdd (ComfyUI's, for "add difference" merges):
  ``w = multiplier·(w1 - w2)`` and ``w = w1 + w2``.
- FuseModelsLayerwise: ``w = (1-f)·w_base + f·w_fine_tuned`` with ``f`` the fine-tuned share given
  per block by patterns over diffusers UNet names (:mod:`nodes.training.block_weights`), and
  ``default_weight`` elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graph_runtime.context import Context, HookContext
from graph_runtime.node import Float, Link, Node, Output, String

from nodes.diffusion.merge import MergePatch, float_state
from nodes.diffusion.models import DiffusionModel
from nodes.infra import ldm_keys
from nodes.infra.model_manager import manager_from
from nodes.training.block_weights import PatternError, parse_rules, resolve_weights

# name -> (keep, take): model1's and model2's coefficients for one parameter
Coefficients = Callable[[dict[str, str]], dict[str, tuple[float, float]]]
CATEGORY = "advanced/model_merging"


def merge_models(ctx: Context, model1: DiffusionModel, model2: DiffusionModel, coefficients: Coefficients, *,
                 names: tuple[str, str] = ("model1", "model2")) -> DiffusionModel:
    """``model1`` with ``model2`` merged in by ``coefficients(diffusers name -> LDM name)``. Raises
    ValueError when the two UNets differ in family, parameters or shapes (naming both inputs)."""
    manager = manager_from(ctx.services)
    if model1.family != model2.family:
        raise ValueError(f"{names[1]} is a {model2.family} model and {names[0]} a {model1.family} one: only models of "
                         "one family (same UNet architecture) merge")
    mine, theirs = float_state(manager.ensure_loaded(model1.ref)), float_state(manager.ensure_loaded(model2.ref))
    misfits = [f"{n} {list(mine[n].shape)} vs {list(theirs[n].shape)}" for n in mine
               if n in theirs and mine[n].shape != theirs[n].shape]
    missing = sorted(mine.keys() ^ theirs.keys())
    if misfits or missing:
        detail = "; ".join(misfits[:3]) or f"parameters only one has: {missing[:3]}"
        raise ValueError(f"{names[1]}'s UNet does not fit {names[0]}'s ({len(misfits) + len(missing)} parameters differ, "
                         f"e.g. {detail}): merge models of the same architecture")
    unet = manager.ensure_loaded(model1.ref)
    ldm_names = {diffusers: ldm for ldm, diffusers in
                 ldm_keys.unet_to_ldm({n: n for n in mine}, dict(unet.config)).items()}  # type: ignore[arg-type]
    blend = {name: pair for name, pair in coefficients(ldm_names).items() if pair != (1.0, 0.0)}
    return model1.with_patch(MergePatch(model2, blend)) if blend else model1


def ratio_input(name: str, tooltip: str) -> Any:
    return Float(name, 1.0, min=0.0, max=1.0, step=0.01, tooltip=tooltip)


class ModelMergeSimple(Node):
    category = CATEGORY
    description = ("Merge two diffusion models of one architecture: every UNet weight = ratio·model1 + "
                   "(1-ratio)·model2 (ratio 1 keeps model1). Lazy: weights are blended only while the model is used.")
    inputs = [Link("model1", "MODEL"), Link("model2", "MODEL"), ratio_input("ratio", "share of model1")]
    outputs = [Output("MODEL")]

    def run(self, ctx: Context, *, model1: DiffusionModel, model2: DiffusionModel, ratio: float) -> tuple[Any, ...]:
        return (merge_models(ctx, model1, model2, lambda names: {n: (ratio, 1.0 - ratio) for n in names}),)


class ModelMergeBlocks(Node):
    category = CATEGORY
    description = ("Merge two diffusion models with one ratio (share of model1) per UNet part: input blocks (and "
                   "the time/label embeddings), middle block, output blocks (and the final norm and conv).")
    inputs = [Link("model1", "MODEL"), Link("model2", "MODEL"), ratio_input("input", "share of model1 in the input blocks"),
              ratio_input("middle", "share of model1 in the middle block"),
              ratio_input("out", "share of model1 in the output blocks")]
    outputs = [Output("MODEL")]

    def run(self, ctx: Context, *, model1: DiffusionModel, model2: DiffusionModel, input: float, middle: float,
            out: float) -> tuple[Any, ...]:
        ratios = {"input": input, "middle": middle, "out": out}

        def per_block(names: dict[str, str]) -> dict[str, tuple[float, float]]:
            result = {}
            for name, ldm in names.items():
                prefixes = [p for p in ratios if ldm.startswith(p)]
                ratio = ratios[max(prefixes, key=len)] if prefixes else input
                result[name] = (ratio, 1.0 - ratio)
            return result

        return (merge_models(ctx, model1, model2, per_block),)


class ModelMergeSubtract(Node):
    category = CATEGORY
    description = ("ComfyUI's difference of two diffusion models of one architecture: every UNet weight = "
                   "multiplier·(model1 - model2), e.g. a fine-tune minus its base, to add to another model.")
    inputs = [Link("model1", "MODEL"), Link("model2", "MODEL"),
              Float("multiplier", 1.0, min=-10.0, max=10.0, step=0.01)]
    outputs = [Output("MODEL")]

    def run(self, ctx: Context, *, model1: DiffusionModel, model2: DiffusionModel,
            multiplier: float) -> tuple[Any, ...]:
        return (merge_models(ctx, model1, model2, lambda names: {n: (multiplier, -multiplier) for n in names}),)


class ModelMergeAdd(Node):
    category = CATEGORY
    description = "ComfyUI's sum of two diffusion models of one architecture: every UNet weight = model1 + model2."
    inputs = [Link("model1", "MODEL"), Link("model2", "MODEL")]
    outputs = [Output("MODEL")]

    def run(self, ctx: Context, *, model1: DiffusionModel, model2: DiffusionModel) -> tuple[Any, ...]:
        return (merge_models(ctx, model1, model2, lambda names: {n: (1.0, 1.0) for n in names}),)


class FuseModelsLayerwise(Node):
    category = CATEGORY
    display_name = "Fuse Models Layer-wise"
    description = ("EcomXL stage 2: fuse a fine-tuned UNet back into its base with a weight per block, "
                   "w = (1-f)·base + f·fine_tuned, f from patterns over diffusers UNet names (one 'pattern: weight' "
                   "per line; '*' is any one name segment; the longest matching pattern wins), default_weight "
                   "elsewhere. See docs/training.md.")
    inputs = [Link("base", "MODEL"), Link("fine_tuned", "MODEL"),
              String("block_weights", "up_blocks.*.attentions: 0.8", multiline=True,
                     tooltip="one 'pattern: weight' per line, weight = share of the fine-tuned model (0..1)"),
              Float("default_weight", 0.3, min=0.0, max=1.0, step=0.01,
                    tooltip="share of the fine-tuned model where no pattern matches")]
    outputs = [Output("MODEL")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        text = widgets.get("block_weights")
        if not isinstance(text, str):
            return None
        try:
            parse_rules(text)
        except PatternError as exc:
            return f"block_weights: {exc}"
        return None

    def run(self, ctx: Context, *, base: DiffusionModel, fine_tuned: DiffusionModel, block_weights: str,
            default_weight: float) -> tuple[Any, ...]:
        rules = parse_rules(block_weights)

        def layerwise(names: dict[str, str]) -> dict[str, tuple[float, float]]:
            try:
                shares = resolve_weights(rules, names, default_weight)
            except PatternError as exc:
                raise ValueError(f"block_weights: {exc}") from None
            return {name: (1.0 - share, share) for name, share in shares.items()}

        return (merge_models(ctx, base, fine_tuned, layerwise, names=("base", "fine_tuned")),)


NODES: list[type[Node]] = [ModelMergeSimple, ModelMergeBlocks, ModelMergeSubtract, ModelMergeAdd, FuseModelsLayerwise]
