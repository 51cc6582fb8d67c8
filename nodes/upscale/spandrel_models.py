"""Upscale models through spandrel: from a file to an UPSCALE_MODEL value held by the model manager.

spandrel (https://github.com/chaiNNer-org/spandrel) identifies the architecture from the state
dict's keys and shapes (ESRGAN/RRDBNet and Real-ESRGAN, SwinIR, HAT, DAT, SPAN, Compact, OmniSR,
… every architecture of its main registry) and builds the network. Architectures under
restrictive licences live in the optional ``spandrel_extra_arches`` package; when it is installed
they are recognised too (added to a copy of the registry, never to spandrel's global one).

Files are read by us, never unpickled beyond tensors: ``.safetensors``/``.sft`` as such, pickles
(``.pth``/``.pt``/``.ckpt``/``.bin``) with ``weights_only=True``; spandrel then unwraps the usual
containers (``params_ema``, ``params``, ``state_dict``, ``module.`` prefixes).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nodes.infra.files import ModelFileError, file_identity, read_pickle, read_state_dict
from nodes.infra.model_manager import LoadPolicy, ModelManager, ModelRef

PART = "upscaler"


@dataclass(frozen=True)
class UpscaleInfo:
    """What a file is, as spandrel describes it (kept in the manager's descriptions cache)."""

    architecture: str
    scale: int
    input_channels: int
    output_channels: int
    tiling: str  # spandrel's ModelTiling: "SUPPORTED", "DISCOURAGED" or "INTERNAL"
    multiple_of: int  # input sizes are padded to a multiple of this (spandrel pads, we size tiles)
    supports_half: bool
    supports_bfloat16: bool


@dataclass(frozen=True, eq=False)
class UpscaleModel:
    """UPSCALE_MODEL: a reference to the network in the model manager, and what it is."""

    ref: ModelRef
    info: UpscaleInfo
    name: str

    @property
    def scale(self) -> int:
        return self.info.scale


class SpandrelModule(torch.nn.Module):
    """spandrel's descriptor as a module the manager can place and cast: the network is a
    submodule (moved in place), and calling it goes through spandrel's call, which pads the input
    to the architecture's size requirements, crops the output and clamps it to [0, 1]."""

    def __init__(self, descriptor: Any) -> None:
        super().__init__()
        self.net = descriptor.model
        self._descriptor = descriptor  # not a Module: holds the same network, never a copy

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self._descriptor(image)


@functools.cache
def registry() -> Any:
    """spandrel's main registry, plus spandrel_extra_arches' architectures when installed."""
    from spandrel import MAIN_REGISTRY

    try:
        from spandrel_extra_arches import EXTRA_REGISTRY  # type: ignore[import-not-found]
    except ImportError:
        return MAIN_REGISTRY
    combined = MAIN_REGISTRY.copy()
    combined.add(*EXTRA_REGISTRY)
    return combined


def read_upscaler_state(path: Path) -> dict[str, Any]:
    """The file's tensors, unwrapped as spandrel expects (``params_ema`` etc.)."""
    from spandrel import canonicalize_state_dict

    if Path(path).suffix.lower() in (".safetensors", ".sft"):
        state: Any = read_state_dict(path)[0]
    else:
        state = read_pickle(path)
    if not isinstance(state, dict):
        raise ModelFileError(f"{Path(path).name} holds a {type(state).__name__}, not a state dict")
    try:
        return canonicalize_state_dict(state)
    except (AttributeError, TypeError) as exc:  # spandrel reads every key as a string (prefix checks)
        raise ModelFileError(f"{Path(path).name}: not a state dict of named tensors, a key is not a string "
                             f"({type(exc).__name__}: {exc})") from exc


def load_descriptor(path: Path) -> Any:
    """spandrel's ImageModelDescriptor for ``path``. Raises ModelFileError naming the file when
    spandrel cannot identify it, or when it is not a single-image model (e.g. LaMa inpainting)."""
    from spandrel import ImageModelDescriptor, UnsupportedModelError

    path = Path(path)
    state = read_upscaler_state(path)
    try:
        descriptor = registry().load(state)
    except UnsupportedModelError as exc:
        keys = ", ".join(sorted(state)[:4]) or "none"
        raise ModelFileError(f"{path.name}: spandrel cannot identify the architecture of this file "
                             f"({len(state)} tensors; first keys: {keys}). It is not an upscale model spandrel "
                             f"supports (architectures with restrictive licences need spandrel_extra_arches)"
                             ) from exc
    except Exception as exc:  # noqa: BLE001 - a recognised architecture whose weights do not fit
        raise ModelFileError(f"{path.name}: spandrel could not build the network from these weights "
                             f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(descriptor, ImageModelDescriptor):
        raise ModelFileError(f"{path.name}: a {descriptor.architecture.name} {descriptor.purpose} model, not a "
                             f"single-image model (it needs a mask); it cannot upscale")
    return descriptor


def describe(descriptor: Any) -> UpscaleInfo:
    return UpscaleInfo(architecture=descriptor.architecture.name, scale=int(descriptor.scale),
                       input_channels=int(descriptor.input_channels),
                       output_channels=int(descriptor.output_channels), tiling=descriptor.tiling.name,
                       multiple_of=int(descriptor.size_requirements.multiple_of),
                       supports_half=bool(descriptor.supports_half),
                       supports_bfloat16=bool(descriptor.supports_bfloat16))


def compute_dtype(manager: ModelManager, info: UpscaleInfo) -> torch.dtype:
    """The manager's reduced precision where the architecture supports it (spandrel's flags);
    fp32 on CPU and for architectures that overflow or were not validated in half precision."""
    if manager.device.type == "cpu" or manager.dtype == torch.float32:
        return torch.float32
    if manager.dtype == torch.bfloat16 and info.supports_bfloat16:
        return torch.bfloat16
    if info.supports_half:
        return torch.float16
    return torch.float32


def load_upscale_model(manager: ModelManager, path: Path, *, label: str = "") -> UpscaleModel:
    """UPSCALE_MODEL for ``path``, loaded now (so an unidentifiable file fails in the loader)."""
    path = Path(path)
    group = ("upscale_model", *file_identity(path))
    pending: dict[str, Any] = {}
    info = manager.descriptions.get(group)
    if info is None:
        pending["descriptor"] = load_descriptor(path)
        info = describe(pending["descriptor"])
        manager.descriptions.put(group, info)

    def loader() -> dict[str, torch.nn.Module]:
        descriptor = pending.pop("descriptor", None) or load_descriptor(path)
        return {PART: SpandrelModule(descriptor)}

    ref = ModelRef(group, PART, loader, label or path.name,
                   policy=LoadPolicy(dtype=compute_dtype(manager, info), compile=False))
    manager.ensure_loaded(ref)
    pending.clear()  # the reference outlives this call: it must not keep a second network alive
    return UpscaleModel(ref=ref, info=info, name=label or path.name)
