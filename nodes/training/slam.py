"""TrainSLAM: consistency distillation of a MODEL into a LoRA for 4-step sampling (SLAM, arXiv 2404.13903).

The math is :mod:`nodes.training.consistency`; this module wires it to a UNet and the shared loop.
The data are the teacher's own samples: ``samples_per_prompt`` latents per prompt, drawn once with
the shared sampling loop (DDIM, ``teacher_steps``, the middle of the guidance range) and kept in
the run folder. The student is the teacher's UNet plus a LoRA; the teacher is the same UNet with
the LoRA switched off; the target is the student under no_grad (``target`` "online", as the
LCM-LoRA recipe) or an EMA of its LoRA (``target`` "ema", as SLAM's full-model script). With
``sub_path`` on, the student also reads γ through :class:`nodes.training.students.GammaInput`
(training only), as SLAM's script feeds it through ``timestep_cond``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from graph_runtime.context import Context, HookContext
from graph_runtime.node import Boolean, Combo, Float, Int, Link, Node, Output, Result, String
from nodes.diffusion.models import ClipModel, DiffusionModel
from nodes.diffusion.sampling import SampleSettings, sample
from nodes.infra.model_manager import ModelManager, manager_from
from nodes.training import consistency as cd
from nodes.training import students
from nodes.training.loop import (PRECISIONS, FinalOutputs, TrainSettings, resume_problem, run_folder_for, seeded,
                                 TrainingNode, train)
from nodes.training.lora_files import LoraTarget, save_lora
from nodes.training.run_folder import RunFolder

Tensor = torch.Tensor


@dataclass(frozen=True)
class SLAMSettings:
    """The recipe's own choices (the optimiser's are :class:`TrainSettings`). Guidance scales are
    cfg scales (``uncond + s·(cond − uncond)``); ``sub_path`` False is plain LCM (γ = 1)."""

    prompts: tuple[str, ...]
    width: int = 512
    height: int = 512
    samples_per_prompt: int = 2
    teacher_steps: int = 25
    batch_size: int = 1
    rank: int = 64
    alpha: float = 64.0
    guidance_min: float = 4.0
    guidance_max: float = 16.0
    sub_path: bool = False
    loss: str = "huber"
    huber_c: float = 0.001
    target: str = "ema"
    ema_decay: float = 0.95


class SLAMRecipe:
    """The :class:`nodes.training.loop.Recipe` of SLAM distillation."""

    def __init__(self, ctx: Context, model: DiffusionModel, clip: ClipModel, s: SLAMSettings, folder: RunFolder,
                 seed: int, lora_target: LoraTarget) -> None:
        self.model, self.s, self.lora_target = model, s, lora_target
        manager = manager_from(ctx.services)
        self.prediction = str(model.scheduler_config.get("prediction_type", "epsilon"))
        self.grid = cd.SolverGrid.from_scheduler_config(model.scheduler_config)
        self.cond = students.encode_prompts(clip, manager, list(s.prompts))
        self.uncond = students.encode_prompts(clip, manager, [""])[0]
        self.data = self._teacher_samples(manager, folder, seed)
        self.unet = students.student_copy(model, manager, full=False)
        with seeded(seed):
            students.add_lora(self.unet, s.rank, s.alpha)
        self.device = next(self.unet.parameters()).device
        self.dtype = next(p for p in self.unet.parameters() if not p.requires_grad).dtype
        self.params = students.lora_parameters(self.unet)
        self.gamma_input = None
        if s.sub_path:
            with seeded(seed):
                self.gamma_input = students.GammaInput(self.unet)
        self.ema = None
        if s.target == "ema":
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(list(self.params.values()), decay=s.ema_decay)

    def _teacher_samples(self, manager: ModelManager, folder: RunFolder, seed: int) -> Tensor:
        """[N, C, h, w] latents: the teacher's DDIM samples, one set per run folder."""
        from safetensors.torch import load, save

        stored = folder.path / "teacher_samples.safetensors"
        if stored.is_file():
            return load(stored.read_bytes())["latents"]
        spec = self.model.spec
        shape = spec.latent_shape(1, self.s.height, self.s.width)
        cfg = (self.s.guidance_min + self.s.guidance_max) / 2
        latents = []
        for i, entry in enumerate(self.cond):
            for j in range(self.s.samples_per_prompt):
                settings = SampleSettings(seed=seed + i * self.s.samples_per_prompt + j, steps=self.s.teacher_steps,
                                          cfg=cfg, sampler_name="ddim", scheduler="sgm_uniform")
                out = sample(manager, self.model, [entry], [self.uncond], {"samples": torch.zeros(shape)}, settings)
                latents.append(out["samples"])
        data = torch.cat(latents)
        folder.write_file(stored.name, save({"latents": data.contiguous()}))
        return data

    # -- the Recipe protocol ---------------------------------------------------------------------

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        if self.gamma_input is None:
            return self.params
        return {**self.params, "gamma_input.proj.weight": self.gamma_input.proj.weight}

    def batch(self, step: int, micro: int, generator: torch.Generator) -> dict[str, Tensor]:
        n = self.s.batch_size
        index = torch.randint(0, len(self.data), (n,), generator=generator)
        start, prev = self.grid.pick(n, generator)
        return {"index": index, "t": start, "t_prev": prev, "noise": torch.randn((n, *self.data.shape[1:]), generator=generator),
                "scale": cd.sample_guidance(n, self.s.guidance_min, self.s.guidance_max, generator),
                "gamma": torch.rand(n, generator=generator) if self.s.sub_path else torch.ones(n)}

    def loss(self, batch: dict[str, Tensor], step: int) -> Tensor:
        x0 = self.data[batch["index"]].to(self.device, torch.float32)
        t, t_prev = batch["t"].to(self.device), batch["t_prev"].to(self.device)
        alpha, sigma = self.grid.alpha_sigma(t, x0)
        alpha_p, sigma_p = self.grid.alpha_sigma(t_prev, x0)
        x_t = alpha * x0 + sigma * batch["noise"].to(x0)
        scale = batch["scale"].to(x0).reshape(-1, 1, 1, 1)
        hw = tuple(x0.shape[-2:])
        rows = [self.cond[int(i) % len(self.cond)] for i in batch["index"] // self.s.samples_per_prompt]
        cond = students.text_batch(rows, self.model, dict(self.unet.config), hw, x_t.to(self.dtype))
        uncond = students.text_batch([self.uncond] * len(rows), self.model, dict(self.unet.config), hw, x_t.to(self.dtype))
        guidance = students.guidance_embedding(self.unet, batch["scale"], x_t.to(self.dtype))
        with torch.no_grad():
            x_prev = self._teacher_step(x_t, t, cond, uncond, scale, alpha, sigma, alpha_p, sigma_p)
            target = self._consistency(self._target_output(x_prev, t_prev, cond, guidance), x_prev, t_prev,
                                       alpha_p, sigma_p)
        gamma = batch["gamma"].to(x0).reshape(-1, 1, 1, 1)
        x_g = cd.sub_path_point(x_t, x_prev, gamma, alpha, alpha_p)
        sigma_g = cd.sub_path_sigma(alpha, alpha_p, sigma_p, gamma)
        if self.gamma_input is not None:
            self.gamma_input.set(batch["gamma"])
        try:
            out = students.call_unet(self.unet, x_g.to(self.dtype), t, cond, guidance).float()
        finally:
            if self.gamma_input is not None:
                self.gamma_input.set(None)
        prediction = self._consistency(out, x_g, t, alpha, sigma_g)
        return cd.consistency_loss(prediction, target, self.s.loss, self.s.huber_c)

    def _teacher_step(self, x_t: Tensor, t: Tensor, cond: students.TextBatch, uncond: students.TextBatch,
                      scale: Tensor, alpha: Tensor, sigma: Tensor, alpha_p: Tensor, sigma_p: Tensor) -> Tensor:
        """x_{t-k}: one DDIM step of the guided teacher (the UNet with the LoRA off)."""
        self.unet.disable_adapters()
        try:
            out = students.call_unet(self.unet, x_t.to(self.dtype), t, cond).float()
            if bool((scale != 1).any()):
                out = cd.guided(out, students.call_unet(self.unet, x_t.to(self.dtype), t, uncond).float(), scale)
        finally:
            self.unet.enable_adapters()
        x0 = cd.predicted_x0(out, x_t, alpha, sigma, self.prediction)
        eps = cd.predicted_noise(out, x_t, alpha, sigma, self.prediction)
        return cd.ddim_step(x0, eps, alpha_p, sigma_p)

    def _target_output(self, x_prev: Tensor, t_prev: Tensor, cond: students.TextBatch, guidance: Tensor | None) -> Tensor:
        if self.ema is None:
            return students.call_unet(self.unet, x_prev.to(self.dtype), t_prev, cond, guidance).float()
        params = list(self.params.values())
        self.ema.store(params)
        self.ema.copy_to(params)
        try:
            return students.call_unet(self.unet, x_prev.to(self.dtype), t_prev, cond, guidance).float()
        finally:
            self.ema.restore(params)

    def _consistency(self, out: Tensor, x: Tensor, t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        c_skip, c_out = self.grid.boundary_scalings(t, x)
        return cd.consistency_output(x, cd.predicted_x0(out, x, alpha, sigma, self.prediction), c_skip, c_out)

    def after_step(self, step: int) -> None:
        if self.ema is not None:
            self.ema.step(list(self.params.values()))

    def extra_state(self) -> dict[str, Any] | None:
        return None if self.ema is None else self.ema.state_dict()

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.ema is not None:
            self.ema.load_state_dict(state)

    def preview(self, step: int) -> Tensor | None:
        shape = self.model.spec.latent_shape(1, self.s.height, self.s.width)
        return students.student_preview(self.unet, self.model, self.cond, shape)

    def save_final(self, folder: RunFolder) -> FinalOutputs:
        from peft.utils import get_peft_model_state_dict

        weights = get_peft_model_state_dict(self.unet, adapter_name=students.ADAPTER)
        return save_lora(self.lora_target, self.model.family, weights, [], self.unet.peft_config[students.ADAPTER], None)


class TrainSLAM(TrainingNode):
    category = "training"
    description = ("SLAM consistency distillation (arXiv 2404.13903): trains a LoRA that makes the MODEL sample in "
                   "4 steps with SLAMSampler (or KSampler lcm). The data are the teacher's own samples of the "
                   "prompts. Saves models/loras/<lora_name>.safetensors (kohya keys with alpha); outputs its name "
                   "for LoraLoader (and <lora_name>_diffusers/ for diffusers) and the loss per step. Resumes from the last checkpoint when run again.")
    inputs = [Link("model", "MODEL"), Link("clip", "CLIP"),
              String("prompts", "a photo of a product on a table", multiline=True,
                     tooltip="one prompt per line; the teacher draws samples_per_prompt samples of each"),
              Int("width", 512, min=16, max=4096, step=8), Int("height", 512, min=16, max=4096, step=8),
              Int("samples_per_prompt", 2, min=1, max=1000), Int("teacher_steps", 25, min=1, max=200,
                                                                 tooltip="DDIM steps of the teacher's samples"),
              Int("steps", 1000, min=1, max=1_000_000), Float("learning_rate", 1e-4, min=0.0, max=1.0, step=1e-6),
              Int("batch_size", 1, min=1, max=256), Int("gradient_accumulation", 1, min=1, max=256),
              Int("lora_rank", 64, min=1, max=1024), Float("lora_alpha", 64.0, min=0.0, max=4096.0),
              Float("guidance_min", 4.0, min=1.0, max=30.0, step=0.1, tooltip="teacher cfg scale, drawn from U[min, max]"),
              Float("guidance_max", 16.0, min=1.0, max=30.0, step=0.1),
              Boolean("sub_path", False, tooltip="on: SLAM's sub-path points (experimental: not yet better than "
                      "the teacher in our measurements, docs/training.md); off: plain LCM-LoRA distillation"),
              Combo("loss", list(cd.LOSS_KINDS), default="huber"),
              Combo("target", ["online", "ema"], default="ema",
                    tooltip="online: the student under no_grad (LCM-LoRA); ema: an EMA of the LoRA (SLAM)"),
              Float("ema_decay", 0.95, min=0.0, max=0.9999, step=0.001),
              Int("seed", 0, min=0, max=2**63 - 1), Combo("precision", list(PRECISIONS), default="auto"),
              Int("checkpoint_every", 100, min=0, max=1_000_000), Int("preview_every", 50, min=0, max=1_000_000),
              String("lora_name", "slam_lora", tooltip="file name in models/loras (.safetensors added)"),
              String("run_name", "slam"), String("resume_from", "", tooltip="a run folder under output/training/")]
    outputs = [Output("STRING", "lora_name"), Output("LOSS_MAP", "loss")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **w: Any) -> str | None:
        low, high = w.get("guidance_min"), w.get("guidance_max")
        if low is not None and high is not None and low > high:
            return f"guidance_min {low} is above guidance_max {high}"
        if w.get("prompts") is not None and not _prompts(w["prompts"]):
            return "prompts is empty: give at least one prompt (one per line)"
        if w.get("lora_name") is not None and (problem := _name_problem(w["lora_name"])):
            return problem
        return resume_problem(ctx, w.get("resume_from"))

    def run(self, ctx: Context, *, model: DiffusionModel, clip: ClipModel, prompts: str, width: int, height: int,
            samples_per_prompt: int, teacher_steps: int, steps: int, learning_rate: float, batch_size: int,
            gradient_accumulation: int, lora_rank: int, lora_alpha: float, guidance_min: float, guidance_max: float,
            sub_path: bool, loss: str, target: str, ema_decay: float, seed: int, precision: str,
            checkpoint_every: int, preview_every: int, lora_name: str, run_name: str, resume_from: str) -> Result:
        if (problem := self.validate_inputs(ctx, guidance_min=guidance_min, guidance_max=guidance_max,
                                            prompts=prompts, lora_name=lora_name, resume_from=resume_from)):
            raise ValueError(problem)
        s = SLAMSettings(tuple(_prompts(prompts)), width, height, samples_per_prompt, teacher_steps, batch_size,
                         lora_rank, lora_alpha, guidance_min, guidance_max, sub_path, loss, 0.001, target, ema_decay)
        # The optimiser settings of the LCM-LoRA recipe: AdamW, no weight decay, gradient norm 1.
        settings = TrainSettings(steps=steps, seed=seed, learning_rate=learning_rate, weight_decay=0.0,
                                 gradient_accumulation=gradient_accumulation, precision=precision,
                                 checkpoint_every=checkpoint_every, preview_every=preview_every)
        folder = run_folder_for(ctx, run_name, resume_from, {"recipe": "slam", "model": model, "clip": clip,
                                                             "slam": s, "train": settings, "lora_name": lora_name})
        target = LoraTarget(ctx.folders.model_dirs("loras")[0], lora_name.strip())
        result = train(ctx, lambda: SLAMRecipe(ctx, model, clip, s, folder, seed, target), settings, folder,
                       description={"recipe": "slam", "settings": s, "train": settings})
        return Result(outputs=(result.values["lora_name"], result.loss_map), ui=result.ui)


def _prompts(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _name_problem(name: str) -> str | None:
    clean = name.strip()
    if not clean or "/" in clean or "\\" in clean or clean.startswith("."):
        return f"lora_name {name!r} must be a plain file name (no folders), e.g. slam_lora"
    return None


NODES: list[type[Node]] = [TrainSLAM]
