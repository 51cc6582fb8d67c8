"""TrainCLIP: a small CLIP (text + vision towers) trained contrastively from scratch on a DATASET's
images and captions. Its text tower is the CLIP output (family "pixel": CLIPTextEncode conditions a
pixel-space UNet with it, CheckpointSave stores it); the whole model is a scorer folder that
PickScoreLoader and CLIPScoreModelLoader load (best-of-N ranking, CLIP score).

The recipe is :mod:`nodes.training.clip_recipe`; the tokenizer is a CLIP BPE vocabulary made from
the captions (:func:`nodes.infra.tokenizer.caption_vocab`), written to
``models/clip_tokenizer/<run_name>/`` so a checkpoint that names it finds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graph_runtime import Combo, Float, Int, Link, Node, Output, Result, String
from graph_runtime.context import Context, HookContext
from nodes.diffusion.families import PIXEL
from nodes.diffusion.models import ClipModel
from nodes.infra.model_manager import ModelManager, manager_from
from nodes.training.loop import (
    LR_SCHEDULERS, TrainingNode, TrainSettings, resume_problem, run_folder_for, train, warmup_problem,
)
from nodes.training.run_folder import safe_run_name

NOT_IDENTITY = frozenset({"run_name", "resume_from", "checkpoint_every", "preview_every"})
SCORERS, TOKENIZERS = "scorers", "clip_tokenizer"
TEXT_PREFIX = "text_model."  # the text tower's keys in a CLIPModel file
BETAS = (0.9, 0.98)  # CLIP's Adam betas for its ViT models (Radford et al. 2021, Table 19)


def text_tower(folder: Path) -> Any:
    """The ``CLIPTextModel`` of the CLIPModel saved in ``folder`` (its ``text_model.`` weights)."""
    from transformers import CLIPConfig, CLIPTextModel

    from nodes.infra.files import read_state_dict

    encoder = CLIPTextModel(CLIPConfig.from_pretrained(str(folder), local_files_only=True).text_config)
    state, _ = read_state_dict(folder / "model.safetensors")
    tower = {k[len(TEXT_PREFIX):]: v for k, v in state.items() if k.startswith(TEXT_PREFIX)}
    if any(k.startswith(TEXT_PREFIX) for k in encoder.state_dict()):  # transformers 4 nests the tower
        tower = {TEXT_PREFIX + k: v for k, v in tower.items()}
    encoder.load_state_dict(tower, strict=True)
    return encoder.eval()


def trained_clip(manager: ModelManager, scorer_dir: Path, tokenizer_dir: Path) -> ClipModel:
    """CLIP of family "pixel" over the text tower in ``scorer_dir``, held by the model manager
    (reloaded from the folder after an eviction), tokenized by ``tokenizer_dir``."""
    from nodes.diffusion.loading import part_ref
    from nodes.infra.clip_scorer import folder_identity

    part = PIXEL.text_encoders[0].part
    group = ("trained_clip", str(scorer_dir.resolve()), folder_identity(scorer_dir))
    ref = part_ref(group, part, lambda: {part: text_tower(scorer_dir)}, scorer_dir.name)
    manager.ensure_loaded(ref)
    return ClipModel(family=PIXEL.name, refs=(ref,), tokenizer_dirs=(str(tokenizer_dir),),
                     pad_tokens=(PIXEL.text_encoders[0].pad_token,))


def _tower(prefix: str, width: int, layers: int, heads: int) -> list[Any]:
    return [Int(f"{prefix}_width", width, min=8, max=2048, step=8, tooltip=f"{prefix} transformer width"),
            Int(f"{prefix}_layers", layers, min=1, max=48, tooltip=f"{prefix} transformer blocks"),
            Int(f"{prefix}_heads", heads, min=1, max=64, tooltip=f"attention heads; must divide {prefix}_width "
                "(few wide heads run faster on a CPU than many narrow ones)")]


class TrainCLIP(TrainingNode):
    category = "training"
    description = ("Train a small CLIP (text + ViT towers, transformers CLIPModel) from scratch on a DATASET's images "
                   "and captions: symmetric InfoNCE with a learned temperature, images with equal captions positives "
                   "for each other. Its tokenizer is a CLIP BPE vocabulary made from the captions (each caption word "
                   "one token). Outputs the text tower as CLIP (pixel family, for CLIPTextEncode and CheckpointSave) "
                   "and the model as models/scorers/<run_name>/ (PickScoreLoader, CLIPScoreModelLoader). Caption "
                   "dropout of the dataset is not applied. Live loss, retrieval-accuracy previews, checkpoints, "
                   "interrupt and resume.")
    inputs = [
        Link("dataset", "DATASET", tooltip="square images at one resolution (the vision tower's), with captions"),
        String("run_name", "clip", tooltip="names the run folder, models/scorers/<run_name>/ and "
               "models/clip_tokenizer/<run_name>/"),
        *_tower("text", 128, 2, 2), *_tower("vision", 128, 2, 2),
        Int("patch_size", 4, min=1, max=64, tooltip="ViT patch side in pixels; must divide the dataset's resolution"),
        Int("projection_dim", 128, min=8, max=2048, step=8, tooltip="width of the shared embedding space"),
        Int("steps", 2000, min=1, max=10_000_000, tooltip="optimizer steps"),
        Int("batch_size", 64, min=2, max=4096, tooltip="image-caption pairs contrasted with each other per step"),
        Float("learning_rate", 5e-4, min=0.0, max=1.0, step=1e-6, round=False, tooltip="AdamW, β (0.9, 0.98)"),
        Combo("lr_scheduler", list(LR_SCHEDULERS), default="cosine"),
        Int("lr_warmup_steps", 100, min=0, max=10_000_000, tooltip="linear warmup (CLIP: 2000 of ~390k)"),
        Float("weight_decay", 0.1, min=0.0, max=10.0, step=0.01, tooltip="AdamW decoupled weight decay (CLIP: 0.2)"),
        Int("seed", 0, min=0, max=2**63 - 1, control_after_generate=True),
        Int("checkpoint_every", 500, min=0, max=10_000_000, tooltip="steps between checkpoints (0: end and interrupt)"),
        Int("preview_every", 100, min=0, max=10_000_000, tooltip="steps between retrieval previews (0: only at the end)"),
        String("resume_from", "", tooltip="a run folder in output/training/ to continue (empty: the folder of these inputs)"),
    ]
    outputs = [Output("CLIP", "clip", tooltip="the trained text tower, pixel family"),
               Output("STRING", "scorer_name", tooltip="the folder in models/scorers, for Load PickScore Model"),
               Output("LOSS_MAP", "loss")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        if widgets.get("run_name") is not None and not str(widgets["run_name"]).strip():
            return "run_name must not be empty"
        for tower in ("text", "vision"):
            width, heads = widgets.get(f"{tower}_width"), widgets.get(f"{tower}_heads")
            if isinstance(width, int) and isinstance(heads, int) and heads > 0 and width % heads:
                return f"{tower}_width {width} is not divisible by {tower}_heads {heads}"
        return warmup_problem(widgets.get("lr_scheduler"), widgets.get("lr_warmup_steps")) or resume_problem(
            ctx, widgets.get("resume_from"))

    def run(self, ctx: Context, **inputs: Any) -> Result:
        from nodes.infra.tokenizer import caption_vocab, load_tokenizer, write_vocab
        from nodes.training.clip_recipe import CLIPOptions, CLIPRecipe, captions_of, dataset_problem

        dataset = inputs["dataset"]
        problem = dataset_problem(dataset, inputs["patch_size"])
        if problem:
            raise ValueError(f"dataset: {problem}")
        options = CLIPOptions(**{k: inputs[k] for k in (
            "text_width", "text_layers", "text_heads", "vision_width", "vision_layers", "vision_heads", "patch_size",
            "projection_dim", "batch_size", "seed")})
        settings = TrainSettings(
            steps=inputs["steps"], seed=inputs["seed"], learning_rate=inputs["learning_rate"], optimizer="AdamW",
            weight_decay=inputs["weight_decay"], betas=BETAS, lr_scheduler=inputs["lr_scheduler"],
            lr_warmup_steps=inputs["lr_warmup_steps"], max_grad_norm=1.0,
            checkpoint_every=inputs["checkpoint_every"], preview_every=inputs["preview_every"])
        identity = {k: v for k, v in inputs.items() if k not in NOT_IDENTITY}
        folder = run_folder_for(ctx, inputs["run_name"], inputs["resume_from"], identity)
        name = safe_run_name(inputs["run_name"])
        manager = manager_from(ctx.services)

        def recipe() -> CLIPRecipe:
            vocabulary = folder.path / "tokenizer"
            write_vocab(vocabulary, *caption_vocab(captions_of(dataset)))
            return CLIPRecipe(dataset, options, vocabulary, ctx.folders.model_dirs(SCORERS)[0] / name,
                              ctx.folders.model_dirs(TOKENIZERS)[0] / name, manager.device)

        result = train(ctx, recipe, settings, folder, description={"node": "TrainCLIP", **identity})
        load_tokenizer.cache_clear()  # models/clip_tokenizer/<name> may hold a new vocabulary now
        scorer_dir = ctx.folders.model_path(SCORERS, result.values["scorer_name"])
        tokenizer_dir = ctx.folders.model_path(TOKENIZERS, result.values["tokenizer_name"])
        clip = trained_clip(manager, scorer_dir, tokenizer_dir)
        return Result(outputs=(clip, result.values["scorer_name"], result.loss_map), ui=result.ui)


NODES: list[type[Node]] = [TrainCLIP]
