"""The sampler registry: ComfyUI sampler names -> factories building the scheduler of one run.

A ComfyUI "sampler" picks the sampling rule (for the built-ins, a diffusers scheduler class and its
solver options); a ComfyUI "scheduler" picks how its sigmas/timesteps are spaced. The model's own
scheduler config (betas, prediction type) is the base both are applied to, so v-prediction models
and custom beta schedules carry over. Combinations a sampler cannot express are rejected at
validation. Plugins add samplers through the ``nodeloom_register_samplers`` hook
(``nodes.diffusion.hookspecs``); docs/samplers.md is generated from the built-in table.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable


@runtime_checkable
class SamplerFactory(Protocol):
    """Builds a fresh scheduler for one sampling run. The scheduler follows diffusers'
    ``SchedulerMixin`` interface as the denoising loop uses it: ``set_timesteps``, ``timesteps``,
    ``order``, ``init_noise_sigma``, ``scale_model_input``, ``step``, ``add_noise``.

    ``guidance``: "cfg" runs classifier-free guidance when cfg > 1; "none" asks for one UNet
    pass per step whatever the cfg (guidance-free few-step samplers)."""

    guidance: Literal["cfg", "none"]

    def scheduler_class(self) -> type:
        """The scheduler class; its ``__init__`` parameters tell which spacings it supports."""
        ...

    def build(self, config: dict[str, Any], *, seed: int) -> Any:
        """A scheduler from ``config`` (the model's scheduler config with the spacing applied)."""
        ...


@dataclass(frozen=True)
class DiffusersSampler:
    """A diffusers scheduler class with fixed ``options`` and ``defaults`` (kept when the model's
    config sets them). ``seed_option`` names a config entry that takes the run's seed (the SDE
    solvers' Brownian tree is seeded there, not by a generator)."""

    class_name: str
    options: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    seed_option: str | None = None
    note: str = ""
    requires: str | None = None  # an optional package the scheduler needs
    guidance: Literal["cfg", "none"] = "cfg"
    # The most timesteps one run's schedule may hold: LCM/TCD pick theirs from a distillation grid
    # (``original_inference_steps``) and diffusers refuses longer ones in terms of its ``strength``.
    max_schedule: int | None = None

    def scheduler_class(self) -> type:
        return getattr(importlib.import_module("diffusers"), self.class_name)

    def build(self, config: dict[str, Any], *, seed: int) -> Any:
        merged = {**self.defaults, **config, **self.options}
        if self.seed_option is not None:
            merged[self.seed_option] = seed
        return self.scheduler_class().from_config(merged)

    def describe(self) -> tuple[str, str, str]:
        """(scheduler class, options, note) for the docs table."""
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items()) or "-"
        note = self.note + (f" (needs `{self.requires}`)" if self.requires else "")
        return self.class_name, opts, note or "-"


_SDE = {"final_sigmas_type": "zero"}
# LCM's (and TCD's) 50-step distillation grid, the diffusers default of original_inference_steps.
DISTILLATION_GRID = 50
BUILTIN_SAMPLERS: dict[str, DiffusersSampler] = {
    "euler": DiffusersSampler("EulerDiscreteScheduler"),
    "euler_ancestral": DiffusersSampler("EulerAncestralDiscreteScheduler"),
    "heun": DiffusersSampler("HeunDiscreteScheduler"),
    "dpm_2": DiffusersSampler("KDPM2DiscreteScheduler"),
    "dpm_2_ancestral": DiffusersSampler("KDPM2AncestralDiscreteScheduler"),
    "lms": DiffusersSampler("LMSDiscreteScheduler"),
    "dpmpp_2m": DiffusersSampler("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_sde": DiffusersSampler("DPMSolverMultistepScheduler",
                                     {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, _SDE),
    "dpmpp_3m_sde": DiffusersSampler("DPMSolverMultistepScheduler",
                                     {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}, _SDE),
    "dpmpp_2s_ancestral": DiffusersSampler("DPMSolverSinglestepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2},
                                           note="deterministic singlestep solver; ComfyUI's adds ancestral noise"),
    "dpmpp_sde": DiffusersSampler("DPMSolverSDEScheduler", seed_option="noise_sampler_seed", requires="torchsde"),
    "ddim": DiffusersSampler("DDIMScheduler", {"set_alpha_to_one": False}),
    "ddpm": DiffusersSampler("DDPMScheduler"),
    "uni_pc": DiffusersSampler("UniPCMultistepScheduler", {"solver_type": "bh2"},
                               note="bh2 variant: diffusers 0.42's bh1 diverges to NaN on SD schedules"),
    "uni_pc_bh2": DiffusersSampler("UniPCMultistepScheduler", {"solver_type": "bh2"}),
    "deis": DiffusersSampler("DEISMultistepScheduler"),
    "lcm": DiffusersSampler("LCMScheduler", max_schedule=DISTILLATION_GRID),
    "tcd": DiffusersSampler("TCDScheduler", max_schedule=DISTILLATION_GRID),
}

# ComfyUI lists a "_gpu" twin after each of these SDE samplers, drawing its Brownian noise on the
# GPU instead of the CPU. Our noise comes from each sample's own seeded generator wherever the model
# runs, so a twin is the same sampler; workflows saved on other installs name the twins.
GPU_TWINS: dict[str, str] = {"dpmpp_sde_gpu": "dpmpp_sde", "dpmpp_2m_sde_gpu": "dpmpp_2m_sde",
                             "dpmpp_3m_sde_gpu": "dpmpp_3m_sde"}


def _with_gpu_twins(samplers: dict[str, DiffusersSampler]) -> dict[str, DiffusersSampler]:
    """``samplers`` with each GPU twin right after its sampler, as ComfyUI's KSAMPLER_NAMES."""
    twins = {base: twin for twin, base in GPU_TWINS.items()}
    ordered: dict[str, DiffusersSampler] = {}
    for name, sampler in samplers.items():
        ordered[name] = sampler
        if name in twins:
            ordered[twins[name]] = replace(sampler, note=f"`{name}` (ComfyUI's GPU-noise twin; same noise here)")
    return ordered


BUILTIN_SAMPLERS = _with_gpu_twins(BUILTIN_SAMPLERS)

# scheduler name -> (config overrides, the __init__ parameter it needs, note)
SCHEDULERS: dict[str, tuple[dict[str, Any], str | None, str]] = {
    "normal": ({}, None, "the model's own timestep spacing (SD: leading with steps_offset 1)"),
    "karras": ({"use_karras_sigmas": True}, "use_karras_sigmas", "Karras et al. sigmas (rho 7)"),
    "exponential": ({"use_exponential_sigmas": True}, "use_exponential_sigmas", "log-linear sigmas"),
    "beta": ({"use_beta_sigmas": True}, "use_beta_sigmas", "beta-distributed sigmas (alpha=beta=0.6)"),
    "simple": ({"timestep_spacing": "trailing"}, "timestep_spacing", "evenly from the top of the train schedule"),
    "sgm_uniform": ({"timestep_spacing": "trailing"}, "timestep_spacing",
                    "uniform in timesteps from the top (as SGM/SD-Turbo/LCM sample)"),
    "ddim_uniform": ({"timestep_spacing": "leading"}, "timestep_spacing", "DDIM's uniform stride from t=0"),
}

SCHEDULER_NAMES: list[str] = list(SCHEDULERS)


def schedule_length(steps: int, denoise: float = 1.0) -> int:
    """Timesteps a run sets its scheduler to: ``int(steps / denoise)`` when denoise < 1 (ComfyUI's
    img2img meaning; the last ``steps`` of them run), 0 when nothing runs (denoise 0)."""
    if denoise <= 0.0:
        return 0
    return steps if denoise >= 1.0 else int(steps / denoise)


def schedule_problem(sampler_name: str, steps: int, denoise: float, grid: int | None) -> str | None:
    """Why ``steps`` at ``denoise`` cannot run on a sampler that picks its timesteps from a
    ``grid``-step distillation grid (None when it can, or when the sampler has no grid)."""
    length = schedule_length(steps, denoise)
    if grid is None or length <= grid:
        return None
    needs = (f"steps {steps} is" if length == steps
             else f"steps {steps} at denoise {denoise} needs a {length}-step schedule,")
    fix = "lower steps" if length == steps else f"lower steps or raise denoise to at least {steps / grid:.2f}"
    return (f"{needs} more than the {grid} timesteps sampler {sampler_name!r} picks from (the grid LCM/SLAM/TCD "
            f"models are distilled on); {fix}")


class SamplerRegistry:
    """Sampler name -> factory. The built-ins come first; plugins add theirs at startup."""

    def __init__(self, factories: Mapping[str, SamplerFactory]) -> None:
        self._factories: dict[str, SamplerFactory] = dict(factories)
        self.origin: dict[str, str] = {name: "builtin" for name in factories}

    def problem(self, name: object, factory: object, *, source: str) -> str | None:
        """Why ``factory`` cannot be added as ``name`` for ``source`` (None when it can)."""
        if not isinstance(name, str) or not name:
            return f"sampler name {name!r} from {source} is not a non-empty string"
        if not isinstance(factory, SamplerFactory):
            return (f"sampler {name!r} from {source}: {factory!r} is not a SamplerFactory "
                    f"(needs guidance, scheduler_class() and build(config, seed=...))")
        if name in self._factories and self.origin[name] != source:  # a plugin may re-register its own
            return f"sampler {name!r} from {source} is already registered by {self.origin[name]}"
        return None

    def register(self, name: str, factory: SamplerFactory, *, source: str) -> None:
        """Add ``factory`` as ``name``. Raises ValueError on a name another factory holds, or on
        an object that is not a :class:`SamplerFactory`."""
        if (problem := self.problem(name, factory, source=source)) is not None:
            raise ValueError(problem)
        self._factories[name] = factory
        self.origin[name] = source

    def names(self) -> list[str]:
        return list(self._factories)

    def get(self, name: str) -> SamplerFactory:
        """Raises ValueError naming the known samplers."""
        if name not in self._factories:
            raise ValueError(f"sampler {name!r} is not supported; choose one of {self.names()}")
        return self._factories[name]

    def check(self, sampler_name: str, scheduler_name: str) -> str | None:
        """An error message when ``sampler_name`` cannot run with ``scheduler_name``."""
        if sampler_name not in self._factories:
            return f"sampler {sampler_name!r} is not supported; choose one of {self.names()}"
        if scheduler_name not in SCHEDULERS:
            return f"scheduler {scheduler_name!r} is not supported; choose one of {SCHEDULER_NAMES}"
        factory = self._factories[sampler_name]
        requires = getattr(factory, "requires", None)
        if requires and importlib.util.find_spec(requires) is None:
            return f"sampler {sampler_name!r} needs the {requires!r} package (pip install {requires})"
        _, needed, _ = SCHEDULERS[scheduler_name]
        if needed is not None:
            cls = factory.scheduler_class()
            params = inspect.signature(cls.__init__).parameters
            if needed not in params:
                return (f"sampler {sampler_name!r} ({cls.__name__}) does not support the "
                        f"{scheduler_name!r} scheduler; use one of "
                        f"{[n for n in SCHEDULER_NAMES if SCHEDULERS[n][1] in (None, *params)]}")
        return None

    def schedule_problem(self, sampler_name: str, steps: int, denoise: float = 1.0) -> str | None:
        """Why ``sampler_name`` cannot run ``steps`` at ``denoise`` (None when it can)."""
        factory = self._factories.get(sampler_name)
        return schedule_problem(sampler_name, steps, denoise, getattr(factory, "max_schedule", None))

    def build(self, base_config: dict[str, Any], sampler_name: str, scheduler_name: str, *, seed: int = 0) -> Any:
        """A fresh scheduler for one sampling run (schedulers hold per-run state). Raises
        ValueError for a combination :meth:`check` rejects."""
        error = self.check(sampler_name, scheduler_name)
        if error:
            raise ValueError(error)
        config = {k: v for k, v in base_config.items() if k != "_class_name"}
        config.update(SCHEDULERS[scheduler_name][0])
        return self._factories[sampler_name].build(config, seed=seed)


# The process's samplers: what KSampler lists and runs. Plugin samplers join at startup
# (nodes.diffusion.nodeloom_startup) and stay for the life of the process, like plugin nodes.
SAMPLERS = SamplerRegistry(BUILTIN_SAMPLERS)
SAMPLER_NAMES: list[str] = list(BUILTIN_SAMPLERS)


def check_combination(sampler_name: str, scheduler_name: str) -> str | None:
    return SAMPLERS.check(sampler_name, scheduler_name)


def build_scheduler(base_config: dict[str, Any], sampler_name: str, scheduler_name: str, *, seed: int = 0) -> Any:
    return SAMPLERS.build(base_config, sampler_name, scheduler_name, seed=seed)


def describe_mapping() -> str:
    """The built-in mapping as a markdown table (docs/samplers.md is generated from this)."""
    lines = ["| ComfyUI sampler | diffusers scheduler | options | note |", "|---|---|---|---|"]
    for name, sampler in BUILTIN_SAMPLERS.items():
        class_name, opts, note = sampler.describe()
        lines.append(f"| `{name}` | `{class_name}` | {opts} | {note} |")
    lines += ["", "| ComfyUI scheduler | diffusers config | meaning |", "|---|---|---|"]
    for name, (overrides, _, note) in SCHEDULERS.items():
        opts = ", ".join(f"{k}={v!r}" for k, v in overrides.items()) or "(model default)"
        lines.append(f"| `{name}` | {opts} | {note} |")
    return "\n".join(lines)
