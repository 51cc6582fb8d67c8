"""ControlNet and T2I-Adapter files -> diffusers modules in the model manager.

Accepted, told apart by their keys:

- diffusers ControlNets (``controlnet_cond_embedding.*``): a folder with ``config.json``, a file
  the tiny zoo wrote (config in its ``nodeloom_config`` metadata), or a bare file (config read
  from the tensor shapes);
- original-layout ControlNets as published (``control_v11p_sd15_*.pth/.safetensors``: keys under
  ``control_model.``; the fp16 "pruned" re-saves without the prefix), converted with diffusers'
  ``single_file_utils.convert_controlnet_checkpoint``; SDXL's ``label_emb`` (which that converter
  leaves out) is renamed with diffusers' own ``DIFFUSERS_TO_LDM_MAPPING`` table;
- diffusers T2I-Adapters (``adapter.*``): a folder with ``config.json`` or a bare file;
- original-layout (TencentARC) full T2I-Adapters as published (``t2iadapter_*_sd15v2.pth``: keys
  ``conv_in.*``, ``body.N.*``), renamed to diffusers' ``FullAdapter`` keys. Light (color) and style
  adapters are refused, named as such.

Shapes give every size except the attention head count. That comes from a sidecar ``.yaml``
next to the file (the original ``control_stage_config`` A1111/ComfyUI read: ``num_heads`` or
``num_head_channels``), else from the published families: 8 heads for SD1.x's 768-wide text,
64-channel heads otherwise (SD2.x, SDXL). ComfyUI's "diff" ControlNets (a ``difference`` key:
weights stored as the change from a base UNet) get the base model's weights added
(DiffControlNetLoader).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from nodes.control.layouts import (adapter_original_to_diffusers, infer_adapter_config, infer_controlnet_config,
                                   layout_of, ldm_to_diffusers)
from nodes.control.models import ControlKind, ControlModel
from nodes.infra.files import METADATA_KEY, ModelFileError, empty_weights, read_state_dict, read_yaml
from nodes.infra.model_manager import ModelManager, ModelRef

Tensor = torch.Tensor
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def _json_object(text: str, where: str) -> dict[str, Any]:
    """A JSON config that must be an object; ModelFileError naming ``where`` otherwise."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ModelFileError(f"{where} holds a JSON {type(value).__name__}, not an object")
    return value


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    """The original config published next to the weights (``<name>.yaml``), if there is one."""
    value = read_yaml(path) if path.is_file() else None
    return value if isinstance(value, dict) else None


def read_control(path: Path) -> tuple[ControlKind, dict[str, Any], dict[str, Tensor]]:
    """(kind, diffusers config, diffusers-layout state dict) of a file or diffusers folder."""
    path = Path(path)
    if path.is_dir():
        config_file = path / "config.json"
        weights = next((path / n for n in WEIGHT_NAMES if (path / n).is_file()), None)
        if not config_file.is_file() or weights is None:
            raise ModelFileError(f"{path.name}: a ControlNet folder needs config.json and one of {', '.join(WEIGHT_NAMES)}")
        config = _json_object(config_file.read_text(), f"{path.name}/config.json")
        sd, _ = read_state_dict(weights)
        _check_finite(sd, path.name)
        kind: ControlKind = "t2i_adapter" if config.get("_class_name") == "T2IAdapter" else "controlnet"
        return kind, config, sd
    sd, metadata = read_state_dict(path)
    _check_finite(sd, path.name)
    try:
        return _read_tensors(path, sd, metadata)
    except ModelFileError as exc:
        # The reasons below say what is wrong; the file's name says where.
        raise ModelFileError(f"{path.name}: {exc}") from exc


def _check_finite(sd: dict[str, Tensor], name: str) -> None:
    """A damaged file whose weights hold NaN/inf would sample a black image without a word."""
    bad = [key for key, tensor in sd.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise ModelFileError(f"{name}: {len(bad)} weight tensor(s) hold NaN or infinite values, e.g. {bad[0]}; "
                             f"the file is damaged")


def _read_tensors(path: Path, sd: dict[str, Tensor],
                  metadata: dict[str, str]) -> tuple[ControlKind, dict[str, Any], dict[str, Tensor]]:
    sd.pop("difference", None)
    layout = layout_of(sd)
    if layout == "controlnet_ldm":
        sd = ldm_to_diffusers(sd)
    if layout == "t2i_adapter_original":
        sd = adapter_original_to_diffusers(sd)
    stored = _json_object(metadata[METADATA_KEY], f"the {METADATA_KEY} metadata") if METADATA_KEY in metadata else {}
    if layout.startswith("t2i_adapter"):
        return "t2i_adapter", stored.get("t2i_adapter") or infer_adapter_config(sd), sd
    original = _read_sidecar(path.with_suffix(".yaml"))
    return "controlnet", stored.get("controlnet") or infer_controlnet_config(sd, original), sd


def is_difference(path: Path) -> bool:
    return Path(path).is_file() and "difference" in read_state_dict(Path(path))[0]


def build(kind: ControlKind, config: dict[str, Any], sd: dict[str, Tensor], *, name: str) -> torch.nn.Module:
    """The module, loaded strictly (a missing or extra tensor is a ModelFileError naming the file)."""
    from diffusers import ControlNetModel, T2IAdapter

    cls = T2IAdapter if kind == "t2i_adapter" else ControlNetModel
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    try:
        with empty_weights():
            module = cls.from_config(config)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{name}: cannot build a {cls.__name__} from its config: {exc}") from exc
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    try:
        result = module.load_state_dict(sd, strict=False, assign=True)
    except RuntimeError as exc:
        # torch lists every mismatched tensor; the first one says what is wrong (a size or a dtype).
        details = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        raise ModelFileError(f"{name}: the weights do not fit a {cls.__name__} built from its config "
                             f"({details[0] if details else exc}; {len(details)} tensor(s) in all)") from exc
    if result.missing_keys or result.unexpected_keys:
        raise ModelFileError(f"{name}: the weights do not fit a {cls.__name__} (missing {sorted(result.missing_keys)[:5]}, "
                             f"unexpected {sorted(result.unexpected_keys)[:5]})")
    return module


def add_base(sd: dict[str, Tensor], base: dict[str, Tensor]) -> dict[str, Tensor]:
    """A "diff" ControlNet's weights plus the base UNet's, where the UNet has the same tensor."""
    return {k: v + base[k].to(v.dtype) if k in base and base[k].shape == v.shape else v for k, v in sd.items()}


def load_control_model(manager: ModelManager, path: Path, *, name: str,
                       base_unet: torch.nn.Module | None = None) -> ControlModel:
    """A CONTROL_NET value; the module is loaded now so a bad file fails the loader node."""
    path = Path(path)
    target = path / "config.json" if path.is_dir() else path
    stat = target.stat()
    group: tuple[Any, ...] = ("controlnet", str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    base_sd = None
    if base_unet is not None and is_difference(path):
        base_sd = {k: v.detach().float().cpu() for k, v in base_unet.state_dict().items()}
        group = (*group, "difference", id(base_unet))

    def loader() -> dict[str, torch.nn.Module]:
        kind, config, sd = read_control(path)
        if base_sd is not None:
            sd = add_base(sd, base_sd)
        return {"control": build(kind, config, sd, name=name)}

    ref = ModelRef(group, "control", loader, name)
    module = manager.ensure_loaded(ref)
    kind: ControlKind = "t2i_adapter" if type(module).__name__ == "T2IAdapter" else "controlnet"
    cross = module.config.get("cross_attention_dim") if kind == "controlnet" else None
    return ControlModel(ref=ref, kind=kind, name=name, cross_attention_dim=cross)
