"""The one training loop every training node runs: progress, previews, checkpoints, resume, interrupt.

A recipe (TrainLoRA, TrainSLAM, DistillFineTune, TrainESRGAN) is a small object that knows its
models and its loss; everything else is here. To write one:

    class MyRecipe:                                    # satisfies the Recipe protocol
        device = torch.device("cpu")                   # where the loss is computed (autocast)
        def trainable(self) -> dict[str, torch.nn.Parameter]: ...   # fp32, names stable across runs
        def batch(self, step, micro, generator): ...   # the data of micro-batch ``micro`` of ``step``
        def loss(self, batch, step) -> torch.Tensor: ...           # a scalar; may use torch's RNG
        def preview(self, step) -> torch.Tensor | None: ...        # [H, W, 3] float 0..1, or None
        def save_final(self, folder) -> FinalOutputs: ...          # write the result files
        # optional: after_step(step), extra_state() -> dict / load_extra_state(dict) (EMA
        # weights, a discriminator and its optimizer), close() (undo changes to shared modules)

    def run(self, ctx, *, dataset, model, steps, seed, run_name, resume_from, ...):
        settings = TrainSettings(steps=steps, seed=seed, learning_rate=..., ...)
        folder = run_folder_for(ctx, run_name, resume_from, identity_inputs)   # inputs that change the result
        result = train(ctx, lambda: MyRecipe(...), settings, folder, description=identity_inputs)
        return Result(outputs=(result.outputs["name"], result.loss_map), ui=result.ui)

    @classmethod
    def fingerprint(cls, ctx, **widgets):   # so the cache never returns an unfinished run's result
        return training_fingerprint(ctx, widgets)

What :func:`train` does:

- ``make_recipe`` is only called when there is something to train: a finished run whose files all
  exist returns its recorded outputs at once (no model is loaded). Create random trainable
  weights inside ``seeded(settings.seed)`` so a run's start does not depend on what was loaded
  before it in the process.
- Steps ``1..steps``: ``gradient_accumulation`` micro-batches (loss / n, summed gradients); the
  batch of (step, micro) comes from a generator seeded from (seed, step, micro), so any step's data
  is reproducible after a resume. Autocast in fp16 (with a GradScaler) or bf16 on CUDA for
  ``precision`` fp16/bf16/auto; fp32 on the CPU. ``max_grad_norm`` > 0 clips the gradient norm.
  A non-finite loss stops the run with an error naming the step. Optimizer (AdamW, Adam, SGD,
  Adafactor) and diffusers' ``get_scheduler`` learning-rate schedules with warmup.
- Every ``checkpoint_every`` steps and at the end: trainable weights, optimizer, lr scheduler,
  grad scaler, RNG states (torch, CUDA, python), loss history and the recipe's extra state, written
  atomically into the run folder (:mod:`nodes.training.run_folder`).
- Every step ``ctx.progress(step, steps, text=…)`` (step/total, loss, smoothed loss, lr, it/s, ETA);
  every ``preview_every`` steps a preview (the recipe's sample beside the loss curve) with it.
  An interrupt (raised by ``ctx.progress`` after the step in progress finishes) writes a
  checkpoint of that step and ends the run as interrupted.
- Running again with the same inputs (same folder), or naming the folder in ``resume_from``,
  continues from the newest checkpoint; with the same seed the result equals an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from graph_runtime.context import Context, HookContext, Interrupted
from graph_runtime.events import Preview
from graph_runtime.folders import safe_join
from graph_runtime.node import Node
from nodes.training import progress as show
from nodes.training.run_folder import RunFolder, file_stamp, folder_fingerprint, training_root
from nodes.training.settings import (
    LR_SCHEDULERS, OPTIMIZERS, PRECISIONS, TrainingError, TrainSettings, autocast_dtype, build_optimizer,
    check_settings, warmup_problem,
)

# What a training node or recipe imports from here (the settings live in nodes.training.settings).
__all__ = [
    "LR_SCHEDULERS", "OPTIMIZERS", "PRECISIONS", "FinalOutputs", "Recipe", "TrainResult",
    "TrainSettings", "TrainingError", "autocast_dtype", "build_optimizer", "resume_problem",
    "run_folder_for", "seeded", "train", "training_fingerprint", "TrainingNode", "warmup_problem",
]

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class FinalOutputs:
    """What ``save_final`` wrote: JSON-able ``values`` the node turns into its outputs (a LoRA's
    name, say) and the ``files`` that back them (a finished run whose files are gone trains again)."""

    values: dict[str, Any]
    files: list[Path] = field(default_factory=list)


class Recipe(Protocol):
    device: torch.device

    def trainable(self) -> dict[str, torch.nn.Parameter]: ...
    def batch(self, step: int, micro: int, generator: torch.Generator) -> Any: ...
    def loss(self, batch: Any, step: int) -> torch.Tensor: ...
    def preview(self, step: int) -> torch.Tensor | None: ...
    def save_final(self, folder: RunFolder) -> FinalOutputs: ...


@dataclass
class TrainResult:
    values: dict[str, Any]
    losses: list[float]
    folder: RunFolder
    resumed_from: int | None  # the checkpoint step training continued from; None: from scratch
    trained_steps: int  # optimizer steps this call ran (0 for a finished run)
    ui: dict[str, Any]

    @property
    def loss_map(self) -> dict[str, list[float]]:
        """ComfyUI's LOSS_MAP value (its TrainLoraNode's loss output)."""
        return {"loss": list(self.losses)}


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Torch's RNG seeded with ``seed`` inside, restored after: for creating trainable weights."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def run_folder_for(ctx: Context, run_name: str, resume_from: str, inputs: Mapping[str, Any]) -> RunFolder:
    """``resume_from`` (a folder name under output/training/) when given, else the folder named
    from ``run_name`` and a hash of ``inputs`` (the values that change the result)."""
    root = training_root(ctx.folders.directory_for("output"))
    if resume_from.strip():
        path = safe_join(root, resume_from.strip())
        if not (path / "run.json").is_file():
            raise FileNotFoundError(f"resume_from: no training run folder {resume_from!r} in {root}")
        return RunFolder(path)
    return RunFolder.for_inputs(ctx.folders.directory_for("output"), run_name, inputs)


def resume_problem(ctx: HookContext, resume_from: str | None) -> str | None:
    """Validation of a ``resume_from`` widget: empty, or a run folder under output/training/."""
    if not resume_from or not resume_from.strip():
        return None
    root = training_root(ctx.folders.directory_for("output"))
    try:
        path = safe_join(root, resume_from.strip())
    except ValueError as exc:
        return f"resume_from: {exc}"
    if not (path / "run.json").is_file():
        runs = sorted(p.name for p in root.glob("*/run.json")) if root.is_dir() else []
        return (f"resume_from: {resume_from!r} is not a training run folder in {root} "
                f"(runs there: {', '.join(p.split('/')[0] for p in runs) or 'none'})")
    return None


def training_fingerprint(ctx: HookContext, widgets: Mapping[str, Any]) -> Any:
    """A training node's cache fingerprint: the state of the run folders it may use."""
    return folder_fingerprint(ctx.folders.directory_for("output"), widgets.get("run_name"),
                              widgets.get("resume_from") or None)


class TrainingNode(Node):
    """Base of the training nodes: long-running (the server schedules them apart), output nodes
    (what they write into models/ is their purpose, so a workflow of one training node runs) and
    fingerprinted by their run folders, so the cache never hands back an unfinished run's result."""

    long_running = True
    output_node = True

    @classmethod
    def fingerprint(cls, ctx: HookContext, **widgets: Any) -> Any:
        return training_fingerprint(ctx, widgets)


# -- the loop --------------------------------------------------------------------------------------

def train(ctx: Context, make_recipe: Callable[[], Recipe], settings: TrainSettings, folder: RunFolder, *,
          description: Mapping[str, Any]) -> TrainResult:
    """Train (or resume, or return a finished run): see the module docstring."""
    check_settings(settings)
    folder.open(description)
    try:
        done = folder.finished_outputs()
        state = folder.state() or {}
        if done is not None and state.get("total") == settings.steps:
            losses = [float(x) for x in state.get("losses", [])]
            return TrainResult(done, losses, folder, state.get("step"), 0, _ui(folder, state))
        return _Loop(ctx, make_recipe(), settings, folder).run()
    finally:
        folder.close()


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _ui(folder: RunFolder, state: Mapping[str, Any]) -> dict[str, Any]:
    subfolder = folder.path.relative_to(folder.path.parents[1]).as_posix()
    images = [{"filename": name, "subfolder": f"{subfolder}/previews", "type": "output"}
              for name in state.get("preview_files", []) if (folder.path / "previews" / name).is_file()]
    return {"images": images, "text": [f"{state.get('status')} at step {state.get('step')}/{state.get('total')}: "
                                       f"{folder.path}"]}


class _Loop:
    def __init__(self, ctx: Context, recipe: Recipe, settings: TrainSettings, folder: RunFolder) -> None:
        from diffusers.optimization import get_scheduler

        self.ctx, self.recipe, self.s, self.folder = ctx, recipe, settings, folder
        self.named = dict(recipe.trainable())
        if not self.named:
            raise TrainingError("the recipe has no trainable parameters")
        self.amp = autocast_dtype(settings.precision, recipe.device)
        wrong = [n for n, p in self.named.items() if p.dtype != torch.float32]
        if wrong and self.amp is not None:
            raise TrainingError(f"trainable parameters must be fp32 under mixed precision; {wrong[0]} is {self.named[wrong[0]].dtype}")
        params = list(self.named.values())
        self.optimizer = build_optimizer(settings, params)
        self.scheduler = get_scheduler(settings.lr_scheduler, self.optimizer, num_warmup_steps=settings.lr_warmup_steps,
                                       num_training_steps=settings.steps)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.meter = show.LossMeter()
        self.step = 0
        self.resumed_from: int | None = None
        self.saved_step = -1
        self.preview_files: list[str] = []

    def run(self) -> TrainResult:
        self._resume()
        start = self.step
        self.meter.start(self.step)
        self._write_state("running")
        try:
            self.ctx.progress(self.step, self.s.steps, text=self.meter.line(self.step, self.s.steps, self._lr()))
            while self.step < self.s.steps:
                self._one_step()
                preview = self._preview() if self._due(self.s.preview_every) else None
                if self._due(self.s.checkpoint_every):
                    self._checkpoint()
                self.ctx.progress(self.step, self.s.steps, preview=preview,
                                  text=self.meter.line(self.step, self.s.steps, self._lr()))
            return self._finish(start)
        except Interrupted:
            if self.step > 0:
                self._checkpoint()
            self._write_state("interrupted")
            raise
        except BaseException as exc:
            self._write_state("failed", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            close = getattr(self.recipe, "close", None)
            if close is not None:
                close()

    def _finish(self, start: int) -> TrainResult:
        self._checkpoint()
        if not self.preview_files or self.preview_files[-1] != f"step-{self.step:06d}.png":
            self._preview()
        final = self.recipe.save_final(self.folder)
        state = self._write_state("finished", outputs=final.values, files=[str(p) for p in final.files],
                                  file_stamps=[file_stamp(p) for p in final.files])
        return TrainResult(final.values, list(self.meter.history), self.folder, self.resumed_from,
                           self.step - start, _ui(self.folder, state))

    def _due(self, every: int) -> bool:
        return self.step == self.s.steps or (every > 0 and self.step % every == 0)

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _resume(self) -> None:
        latest = self.folder.latest_checkpoint()
        if latest is None:
            torch.manual_seed(self.s.seed)
            random.seed(self.s.seed)
            return
        step, path = latest
        weights, state = self.folder.load_checkpoint(path)
        missing = self.named.keys() - weights.keys()
        if missing:
            raise TrainingError(f"checkpoint {path} holds other weights than this run trains (missing "
                                f"{sorted(missing)[:3]}): clear resume_from or give another run_name")
        if state.get("total") != self.s.steps:
            # The learning-rate schedule was laid out for the checkpoint's step count.
            raise TrainingError(f"checkpoint {path} belongs to a run of {state.get('total')} steps, not "
                                f"{self.s.steps}: resuming continues that run with its own steps; for a "
                                f"longer run start a new one (another run_name, resume_from empty)")
        with torch.no_grad():
            for name, param in self.named.items():
                param.copy_(weights[name].to(param.device, param.dtype))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        load_extra = getattr(self.recipe, "load_extra_state", None)
        if load_extra is not None and state.get("extra") is not None:
            load_extra(state["extra"])
        _set_rng_state(state["rng"])
        self.meter.history = [float(x) for x in state["losses"]]
        self.preview_files = list(state.get("preview_files", []))
        self.step = self.saved_step = self.resumed_from = step
        log.info("resuming %s from step %d", self.folder.path, step)

    def _one_step(self) -> None:
        step = self.step + 1
        self.optimizer.zero_grad(set_to_none=True)
        n = self.s.gradient_accumulation
        total = 0.0
        for micro in range(n):
            generator = torch.Generator().manual_seed((self.s.seed * 1_000_003 + step * 1_009 + micro) % 2**63)
            batch = self.recipe.batch(step, micro, generator)
            with torch.autocast(self.recipe.device.type, dtype=self.amp, enabled=self.amp is not None):
                loss = self.recipe.loss(batch, step)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingError(f"the loss is {value} at step {step}: lower the learning rate, or train in "
                                    f"bf16/fp32 instead of fp16")
            self.scaler.scale(loss / n).backward()
            total += value / n
        if self.s.max_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(list(self.named.values()), self.s.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        after = getattr(self.recipe, "after_step", None)
        if after is not None:
            after(step)
        self.step = step
        self.meter.add(total)

    def _checkpoint(self) -> None:
        if self.saved_step == self.step:
            return
        extra = getattr(self.recipe, "extra_state", None)
        state = {"step": self.step, "total": self.s.steps, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "rng": _rng_state(),
                 "losses": list(self.meter.history), "preview_files": list(self.preview_files),
                 "extra": extra() if extra is not None else None}
        self.folder.save_checkpoint(self.step, {n: p.detach() for n, p in self.named.items()}, state,
                                    keep=self.s.keep_checkpoints)
        self.saved_step = self.step
        self._write_state("running")

    def _preview(self) -> Preview:
        devices = [self.recipe.device] if self.recipe.device.type == "cuda" else []
        # Previews must not move the training's random stream: resumed runs stay identical.
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            sample = self.recipe.preview(self.step)
        picture = show.side_by_side(sample, show.loss_curve(self.meter.history, total=self.s.steps))
        name = f"step-{self.step:06d}.png"
        self.folder.write_file(f"previews/{name}", show.encode(picture))
        self.folder.write_file("previews/loss.png", show.encode(show.loss_curve(self.meter.history, total=self.s.steps)))
        self.preview_files = [n for n in self.preview_files if n != name][-20:] + [name]
        return Preview("JPEG", show.encode(picture, "JPEG"))

    def _write_state(self, status: str, **extra: Any) -> dict[str, Any]:
        state = {"status": status, "step": self.step, "total": self.s.steps, "losses": self.meter.history,
                 "checkpoint": self.saved_step if self.saved_step >= 0 else None,
                 "preview_files": self.preview_files[-1:] + (["loss.png"] if self.preview_files else []), **extra}
        self.folder.write_state(**state)
        return state
