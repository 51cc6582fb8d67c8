"""ModelSamplingDiscrete (ComfyUI name and inputs): set what a MODEL's UNet predicts and its noise
schedule, by rewriting the diffusers scheduler config the MODEL carries.

What ComfyUI's node does (``comfy_extras/nodes_model_advanced.py``) and what we match:

- ``eps`` / ``v_prediction`` / ``x0``: the prediction type (diffusers ``epsilon``,
  ``v_prediction``, ``sample``). Every sampler honours it.
- ``lcm``: ComfyUI predicts noise, restricts the schedule to LCM's 50 distilled timesteps
  (``t = 20k - 1``; ``ModelSamplingDiscreteDistilled``) and returns the consistency model's
  boundary-conditioned estimate ``c_out * x0 + c_skip * x`` with ``sigma_data = 0.5`` and timestep
  scaling 10. diffusers' ``LCMScheduler`` does the same (``original_inference_steps=50``,
  ``timestep_scaling=10``), which this patch pins in the config; so ``lcm`` + KSampler's ``lcm``
  sampler is LCM sampling exactly as SLAMSampler runs it. Other samplers read it as ``eps`` (they
  keep the full 1000-step grid and no boundary scaling, where ComfyUI would snap them to the 50).
- ``zsnr``: zero terminal SNR (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps
  are Flawed"): the betas are rescaled with diffusers' ``rescale_zero_terminal_snr`` and, as
  ComfyUI does, the last cumulative alpha is set to 4.8973451890853435e-08 instead of 0 so an
  epsilon prediction stays finite at the last timestep. The result goes in as ``trained_betas``,
  which every diffusers scheduler accepts.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from graph_runtime.context import Context
from graph_runtime.node import Boolean, Combo, Link, Node, Output

from nodes.diffusion.models import DiffusionModel

# ComfyUI sampling type -> diffusers prediction_type
PREDICTION_TYPES: dict[str, str] = {"eps": "epsilon", "v_prediction": "v_prediction", "lcm": "epsilon", "x0": "sample"}
# The LCM distillation grid and boundary-condition scaling (LCM paper, arXiv 2310.04378, eq. 9).
LCM_CONFIG: dict[str, Any] = {"original_inference_steps": 50, "timestep_scaling": 10.0}
# ComfyUI's floor for the last cumulative alpha under zsnr (comfy/model_sampling.py).
ZSNR_LAST_ALPHA_BAR = 4.8973451890853435e-08


def zero_terminal_snr_betas(config: dict[str, Any]) -> torch.Tensor:
    """[num_train_timesteps] float32 betas of ``config``'s schedule rescaled to zero terminal SNR
    (last alpha_bar = ``ZSNR_LAST_ALPHA_BAR``)."""
    from diffusers import DDPMScheduler
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr

    plain = {k: v for k, v in config.items() if k not in ("_class_name", "rescale_betas_zero_snr")}
    betas = rescale_zero_terminal_snr(DDPMScheduler.from_config(plain).betas.clone().double())
    alphas_bar = torch.cumprod(1.0 - betas, dim=0)
    alphas_bar[-1] = ZSNR_LAST_ALPHA_BAR
    ratios = alphas_bar[1:] / alphas_bar[:-1]
    return torch.cat([1.0 - alphas_bar[:1], 1.0 - ratios]).float()


def patch_scheduler_config(config: dict[str, Any], sampling: str, zsnr: bool) -> dict[str, Any]:
    """A copy of ``config`` with ``sampling``'s prediction type (and LCM's grid) and, with ``zsnr``,
    zero-terminal-SNR betas. Raises ValueError for an unknown ``sampling``."""
    if sampling not in PREDICTION_TYPES:
        raise ValueError(f"sampling {sampling!r} is not supported; choose one of {list(PREDICTION_TYPES)}")
    patched = dict(config)
    patched["prediction_type"] = PREDICTION_TYPES[sampling]
    if sampling == "lcm":
        patched.update(LCM_CONFIG)
    if zsnr:
        patched["trained_betas"] = zero_terminal_snr_betas(config).tolist()
        patched["rescale_betas_zero_snr"] = False  # already applied, with ComfyUI's floor
    return patched


class ModelSamplingDiscrete(Node):
    category = "advanced/model"
    description = ("Set what the model predicts (eps, v_prediction, lcm, x0) and optionally rescale its noise "
                   "schedule to zero terminal SNR. 'lcm' + KSampler's 'lcm' sampler is LCM/SLAM few-step sampling "
                   "(docs/slam.md). x0 is refused by euler_ancestral, dpm_2, dpm_2_ancestral and dpmpp_sde. The "
                   "shared model is untouched; only this MODEL's schedule changes.")
    inputs = [Link("model", "MODEL"), Combo("sampling", list(PREDICTION_TYPES)), Boolean("zsnr", False)]
    outputs = [Output("MODEL")]

    def run(self, ctx: Context, *, model: DiffusionModel, sampling: str, zsnr: bool) -> tuple[Any, ...]:
        loaded = model.scheduler_config if model.loaded_scheduler_config is None else model.loaded_scheduler_config
        return (replace(model, scheduler_config=patch_scheduler_config(loaded, sampling, zsnr),
                        loaded_scheduler_config=loaded),)


NODES: list[type[Node]] = [ModelSamplingDiscrete]
