"""ComfyUI sampler and scheduler names mapped onto diffusers schedulers (docs/samplers.md).

A ComfyUI "sampler" picks the diffusers scheduler class (and solver options); a ComfyUI
"scheduler" picks how its sigmas/timesteps are spaced. The model's own scheduler config (betas,
prediction type) is the base both are applied to, so v-prediction models and custom beta schedules
carry over. Combinations diffusers cannot express are rejected at validation.
"""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SamplerSpec:
    scheduler_class: str
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    requires: str | None = None  # an optional package the scheduler needs


SAMPLERS: dict[str, SamplerSpec] = {
    "euler": SamplerSpec("EulerDiscreteScheduler"),
    "euler_ancestral": SamplerSpec("EulerAncestralDiscreteScheduler"),
    "heun": SamplerSpec("HeunDiscreteScheduler"),
    "dpm_2": SamplerSpec("KDPM2DiscreteScheduler"),
    "dpm_2_ancestral": SamplerSpec("KDPM2AncestralDiscreteScheduler"),
    "lms": SamplerSpec("LMSDiscreteScheduler"),
    "dpmpp_2m": SamplerSpec("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_sde": SamplerSpec("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "dpmpp_3m_sde": SamplerSpec("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
    "dpmpp_2s_ancestral": SamplerSpec("DPMSolverSinglestepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2},
                                      note="deterministic singlestep solver; ComfyUI's adds ancestral noise"),
    "dpmpp_sde": SamplerSpec("DPMSolverSDEScheduler", requires="torchsde"),
    "ddim": SamplerSpec("DDIMScheduler", {"set_alpha_to_one": False}),
    "ddpm": SamplerSpec("DDPMScheduler"),
    "uni_pc": SamplerSpec("UniPCMultistepScheduler", {"solver_type": "bh2"},
                          note="bh2 variant: diffusers 0.42's bh1 diverges to NaN on SD schedules"),
    "uni_pc_bh2": SamplerSpec("UniPCMultistepScheduler", {"solver_type": "bh2"}),
    "deis": SamplerSpec("DEISMultistepScheduler"),
    "lcm": SamplerSpec("LCMScheduler"),
    "tcd": SamplerSpec("TCDScheduler"),
}

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

SAMPLER_NAMES: list[str] = list(SAMPLERS)
SCHEDULER_NAMES: list[str] = list(SCHEDULERS)


def _scheduler_class(name: str) -> type:
    import diffusers

    return getattr(diffusers, name)


def check_combination(sampler_name: str, scheduler_name: str) -> str | None:
    """An error message when diffusers cannot run ``sampler_name`` with ``scheduler_name``."""
    if sampler_name not in SAMPLERS:
        return f"sampler {sampler_name!r} is not supported; choose one of {SAMPLER_NAMES}"
    if scheduler_name not in SCHEDULERS:
        return f"scheduler {scheduler_name!r} is not supported; choose one of {SCHEDULER_NAMES}"
    spec = SAMPLERS[sampler_name]
    if spec.requires and importlib.util.find_spec(spec.requires) is None:
        return f"sampler {sampler_name!r} needs the {spec.requires!r} package (pip install {spec.requires})"
    _, needed, _ = SCHEDULERS[scheduler_name]
    if needed is not None:
        params = inspect.signature(_scheduler_class(spec.scheduler_class).__init__).parameters
        if needed not in params:
            return (f"sampler {sampler_name!r} ({spec.scheduler_class}) does not support the "
                    f"{scheduler_name!r} scheduler; use one of "
                    f"{[n for n in SCHEDULER_NAMES if SCHEDULERS[n][1] in (None, *params)]}")
    return None


def build_scheduler(base_config: dict[str, Any], sampler_name: str, scheduler_name: str, *, seed: int = 0) -> Any:
    """A fresh diffusers scheduler for one sampling run (schedulers hold per-run state)."""
    error = check_combination(sampler_name, scheduler_name)
    if error:
        raise ValueError(error)
    spec = SAMPLERS[sampler_name]
    cls = _scheduler_class(spec.scheduler_class)
    config = {k: v for k, v in base_config.items() if k != "_class_name"}
    config.update(spec.options)
    config.update(SCHEDULERS[scheduler_name][0])
    if spec.scheduler_class == "DPMSolverSDEScheduler":
        config["noise_sampler_seed"] = seed  # its Brownian tree is seeded here, not by a generator
    if spec.scheduler_class == "DPMSolverMultistepScheduler" and config.get("algorithm_type", "").startswith("sde"):
        config.setdefault("final_sigmas_type", "zero")
    return cls.from_config(config)


def describe_mapping() -> str:
    """The mapping as a markdown table (docs/samplers.md is generated from this)."""
    lines = ["| ComfyUI sampler | diffusers scheduler | options | note |", "|---|---|---|---|"]
    for name, spec in SAMPLERS.items():
        opts = ", ".join(f"{k}={v!r}" for k, v in spec.options.items()) or "-"
        note = spec.note + (f" (needs `{spec.requires}`)" if spec.requires else "")
        lines.append(f"| `{name}` | `{spec.scheduler_class}` | {opts} | {note or '-'} |")
    lines += ["", "| ComfyUI scheduler | diffusers config | meaning |", "|---|---|---|"]
    for name, (overrides, _, note) in SCHEDULERS.items():
        opts = ", ".join(f"{k}={v!r}" for k, v in overrides.items()) or "(model default)"
        lines.append(f"| `{name}` | {opts} | {note} |")
    return "\n".join(lines)
