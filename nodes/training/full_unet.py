"""DistillFineTune's full and from-scratch modes: every UNet weight trains, and the result is a
single-file checkpoint that CheckpointLoaderSimple loads.

- ``full``: the student is an fp32 copy of the MODEL's UNet (its LoRA patches baked in); the
  original it is distilled from is the MODEL's own UNet, frozen, shared with the model manager.
- ``from_scratch``: the student is a freshly initialised ``UNet2DConditionModel`` (diffusers'
  default initialisation, seeded) built from the MODEL's UNet config with ``unet_config``'s
  overrides (e.g. ``{"block_out_channels": [32, 64], "layers_per_block": 1}``): a new, possibly
  smaller UNet for the MODEL's text encoder(s), VAE and noise schedule. With the distillation weight
  at 0 it is plain denoising training (the demo-model recipe); above 0 the new UNet is also pulled
  towards the MODEL's outputs (knowledge distillation into a smaller network).

The checkpoint holds the student with the MODEL's CLIP and VAE, written by
:func:`nodes.training.checkpoint_save.checkpoint_state` (the UNet's exact config in the
``nodeloom_config`` metadata, so non-standard sizes reload as trained).
"""

from __future__ import annotations

import contextlib
import inspect
import json
from pathlib import Path
from typing import Any

import torch

from nodes.diffusion.models import ClipModel, DiffusionModel, VaeModel
from nodes.infra.files import METADATA_KEY, save_safetensors
from nodes.infra.model_manager import ModelManager
from nodes.training import students
from nodes.training.dataset import ImageCaptionDataset
from nodes.training.distill import DistillRecipe
from nodes.training.lora_recipe import LoraOptions
from nodes.training.loop import FinalOutputs, seeded
from nodes.training.mixing import never_distils
from nodes.training.run_folder import RunFolder

Tensor = torch.Tensor
# Fixed by the MODEL's latents and text encoder(s): a from-scratch UNet must keep them.
FIXED_KEYS = frozenset({"in_channels", "out_channels", "cross_attention_dim", "addition_embed_type",
                        "projection_class_embeddings_input_dim", "addition_time_embed_dim"})
PREVIEW_STEPS = 12


def unet_overrides(text: str) -> dict[str, Any]:
    """``unet_config`` parsed: a JSON object of ``UNet2DConditionModel`` arguments (empty text: none).
    Raises ValueError naming a syntax error, an unknown argument or one the MODEL fixes."""
    from diffusers import UNet2DConditionModel

    if not text.strip():
        return {}
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise ValueError(f"unet_config is not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ValueError(f"unet_config must be a JSON object of UNet2DConditionModel arguments, got {type(value).__name__}")
    known = set(inspect.signature(UNet2DConditionModel.__init__).parameters) - {"self"}
    if unknown := sorted(set(value) - known):
        raise ValueError(f"unet_config: {unknown} are not UNet2DConditionModel arguments")
    if fixed := sorted(set(value) & FIXED_KEYS):
        raise ValueError(f"unet_config: {fixed} are fixed by the MODEL (its latents and text encoder)")
    return value


def _no_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which are not JSON; a NaN norm_eps trains to a NaN loss.
    raise ValueError(f"{name} is not a JSON number")


def build_student(model: DiffusionModel, manager: ModelManager, weights: str, overrides: dict[str, Any],
                  seed: int) -> torch.nn.Module:
    """The fp32, trainable UNet of ``weights`` "full" (a copy of the MODEL's) or "from_scratch"
    (fresh, seeded). Raises ValueError when the overrides do not make a UNet."""
    if weights == "full":
        return students.student_copy(model, manager, full=True)
    with model.use(manager) as unet:
        base = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    return fresh_unet(base, overrides, seed).to(manager.device, torch.float32).train()


def fresh_unet(base: dict[str, Any], overrides: dict[str, Any], seed: int) -> torch.nn.Module:
    """A freshly initialised fp32 ``UNet2DConditionModel`` of ``base`` with ``overrides`` (diffusers'
    default initialisation under torch's RNG seeded with ``seed``: the same seed, the same weights),
    on the CPU. Raises ValueError naming the overrides when they do not make a UNet."""
    from diffusers import UNet2DConditionModel

    try:
        with seeded(seed):
            return UNet2DConditionModel.from_config({**base, **overrides}).float()
    except (ValueError, TypeError, AssertionError, RuntimeError, ZeroDivisionError) as exc:
        raise ValueError(f"unet_config {json.dumps(overrides)} does not make a UNet: {exc}") from exc


class FullDistillRecipe(DistillRecipe):
    """DistillRecipe with every weight of ``student`` training; saves a checkpoint to ``target``."""

    def __init__(self, manager: ModelManager, model: DiffusionModel, clip: ClipModel, vae: VaeModel,
                 dataset: ImageCaptionDataset, options: LoraOptions, target: Path, *, mix: tuple[str, float, float],
                 steps: int, weights: str, overrides: dict[str, Any]) -> None:
        self._init_data(manager, model, vae, dataset, options)
        self.model, self.clip, self.encoders, self.target = model, clip, [], target
        self.mix, self.steps, self.last = mix, steps, None
        self._stack = contextlib.ExitStack()
        # The frozen original (held while training) only when it is ever distilled from.
        self.original = None if never_distils(*mix) else self._stack.enter_context(model.use(manager))
        self.dtype = torch.float32
        try:
            self.unet = build_student(model, manager, weights, overrides, options.seed)
            if weights == "from_scratch":
                self._trial_prediction(overrides)
        except BaseException:
            self._stack.close()  # the loop never closes a recipe that failed to build
            raise
        if options.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()

    def close(self) -> None:
        self._stack.close()

    def _trial_prediction(self, overrides: dict[str, Any]) -> None:
        """One no-grad prediction at the dataset's size. Some configs build a UNet that cannot run
        (``layers_per_block`` 0, class embeddings the MODEL gives no labels for); named here rather
        than as a bare error at step 1."""
        width, height = self.dataset.items[0].bucket
        latent = torch.zeros(self.model.spec.latent_shape(1, height, width), device=self.device)
        self.unet.eval()  # no dropout: the trial draws nothing from the RNG the run is seeded with
        try:
            with torch.no_grad():
                self.predict(latent, torch.zeros(1, dtype=torch.long, device=self.device), [""])
        except (ValueError, TypeError, RuntimeError, IndexError) as exc:
            raise ValueError(f"unet_config {json.dumps(overrides)} makes a UNet that cannot run: {exc}") from exc
        finally:
            self.unet.train()

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        return {f"unet.{name}": p for name, p in self.unet.named_parameters()}

    def original_prediction(self, noisy: Tensor, timesteps: Tensor, captions: list[str]) -> Tensor:
        return self.predict(noisy, timesteps, captions, unet=self.original)

    def preview(self, step: int) -> Tensor | None:
        """The student's 12-step DDIM sample (cfg 1) of ``sample_prompt``."""
        from diffusers import DDIMScheduler

        if not self.o.sample_prompt.strip():
            return None
        width, height = self.dataset.items[0].bucket
        shape = self.model.spec.latent_shape(1, height, width)
        entry = self._conditioning(self.o.sample_prompt, None, grad=False)
        scheduler = DDIMScheduler.from_config(self.model.scheduler_config)
        self.unet.eval()
        try:
            return students.student_preview(self.unet, self.model, [entry], shape, steps=PREVIEW_STEPS,
                                            seed=self.o.seed, scheduler=scheduler)
        finally:
            self.unet.train()

    def save_final(self, folder: RunFolder) -> FinalOutputs:
        from nodes.training.checkpoint_save import checkpoint_state

        state, spec = checkpoint_state(self.manager, self.model, self.clip, self.vae, unet=self.unet)
        save_safetensors(state, self.target, {METADATA_KEY: json.dumps(spec)})
        return FinalOutputs(values={"lora_name": "", "ckpt_name": self.target.name}, files=[self.target])
