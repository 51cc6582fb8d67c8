"""Model sampling overrides (ComfyUI's ModelSamplingDiscrete)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from graph_runtime.context import Context
from graph_runtime.node import Boolean, Combo, Link, Node, Output

from nodes.diffusion.models import DiffusionModel

# ComfyUI's names -> diffusers' prediction_type. ComfyUI's "lcm" and "img_to_img" are not offered.
PREDICTION_TYPES: dict[str, str] = {"eps": "epsilon", "v_prediction": "v_prediction", "x0": "sample"}


class ModelSamplingDiscrete(Node):
    category = "advanced/model"
    description = ("Set what the model predicts when its file does not say or is detected wrongly: eps (SD1.x, "
                   "SD2 512 base), v_prediction (SD2 768-v and v-pred fine-tunes) or x0. zsnr rescales the "
                   "noise schedule to zero terminal SNR (Lin et al. 2023, 'Common Diffusion Noise Schedules "
                   "and Sample Steps are Flawed'), for models trained that way; the euler, euler_ancestral, "
                   "dpmpp_2m, ddim and uni_pc samplers support it, others refuse it. x0 is refused by "
                   "euler_ancestral, dpm_2, dpm_2_ancestral and dpmpp_sde.")
    inputs = [Link("model", "MODEL"), Combo("sampling", list(PREDICTION_TYPES), default="eps"),
              Boolean("zsnr", False)]
    outputs = [Output("MODEL")]

    def run(self, ctx: Context, *, model: DiffusionModel, sampling: str, zsnr: bool) -> tuple[Any, ...]:
        config = dict(model.scheduler_config, prediction_type=PREDICTION_TYPES[sampling])
        config.pop("rescale_betas_zero_snr", None)
        if zsnr:
            config["rescale_betas_zero_snr"] = True
        return (replace(model, scheduler_config=config),)


NODES: list[type[Node]] = [ModelSamplingDiscrete]
