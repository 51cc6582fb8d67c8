"""What a single-file checkpoint says about how to sample it: its sidecar LDM config (the
``<checkpoint>.yaml`` A1111 and ComfyUI accept) and, for SD 2.x, whose 512 epsilon and 768
v-prediction files have the same keys, ComfyUI's weight check."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from torch import Tensor

from nodes.diffusion.families import FamilySpec
from nodes.infra import ldm_keys
from nodes.infra.files import ModelFileError, read_yaml


def read_sidecar(sidecar: Path) -> dict[str, Any]:
    """A sidecar LDM config as a mapping. Users write these by hand (to fix a detected prediction
    type), so a broken one is a ModelFileError naming the file and what is wrong, not a parser's
    traceback; ``model.params`` must be a mapping and ``nodeloom_tokenizer`` a folder name."""
    original = read_yaml(sidecar)
    original = original if original is not None else {}
    model = original.get("model", {}) if isinstance(original, dict) else None
    params = model.get("params", {}) if isinstance(model, dict) else None
    if not isinstance(params, dict):
        raise ModelFileError(f"sidecar config {sidecar.name} is not an LDM config: expected a mapping with "
                             f"model: params: (e.g. parameterization: v)")
    if not isinstance(original.get("nodeloom_tokenizer", ""), str):
        raise ModelFileError(f"sidecar config {sidecar.name}: nodeloom_tokenizer must be a folder name "
                             f"in models/clip_tokenizer")
    return original


# ComfyUI's test (supported_models.SD20.model_type): the 768-v models' last output attention block
# has norm1 biases spread wider than this; the 512 epsilon models' stay near zero.
V_PREDICTION_MIN_STD = 0.09


def prediction_type_of(sd: dict[str, Tensor], fam: FamilySpec, original: dict[str, Any] | None) -> str:
    """``epsilon`` or ``v_prediction`` for a single file without our metadata.

    A sidecar LDM ``.yaml`` decides (``model.params.parameterization: v``; absent means eps, as in
    LDM). Otherwise families published as epsilon are epsilon, and for SD2.x, whose keys are the
    same for both kinds, ComfyUI's weight check decides: a UNet with extra input channels
    (inpainting, depth) is epsilon; otherwise the std of the last output block's
    ``transformer_blocks.0.norm1.bias`` above 0.09 means v-prediction (``output_blocks.11`` in
    full-size files). diffusers' ``from_single_file`` instead takes v_prediction for every SD2 file
    (the stabilityai/stable-diffusion-2-1 config), which samples the 512 base models wrongly.
    ModelSamplingDiscrete overrides whatever is detected here.
    """
    if original is not None:
        params = original.get("model", {}).get("params", {})
        return "v_prediction" if params.get("parameterization", "eps") == "v" else "epsilon"
    if fam.prediction_type != "v_prediction":
        return fam.prediction_type
    conv_in = sd.get(ldm_keys.UNET_PREFIX + "input_blocks.0.0.weight")
    if conv_in is not None and conv_in.shape[1] != fam.latent_channels:
        return "epsilon"
    pattern = re.escape(ldm_keys.UNET_PREFIX) + r"output_blocks\.(\d+)\.1\.transformer_blocks\.0\.norm1\.bias$"
    last = max((int(m.group(1)) for k in sd if (m := re.match(pattern, k))), default=None)
    if last is None:
        return fam.prediction_type
    bias = sd[f"{ldm_keys.UNET_PREFIX}output_blocks.{last}.1.transformer_blocks.0.norm1.bias"]
    if bias.is_meta:  # a layout checked without its weights: nothing to measure
        return fam.prediction_type
    return "v_prediction" if float(bias.float().std(unbiased=False)) > V_PREDICTION_MIN_STD else "epsilon"
