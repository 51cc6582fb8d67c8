"""Soft-edge annotator networks (controlnet_aux's HED and PiDiNet), built at the size their file says.

controlnet_aux hard-codes the published sizes and reads files with a bare ``torch.load``; here the
files are read weights-only (``nodes.infra.files``) and the same controlnet_aux modules are built
with the widths found in the tensors, so the published files (``ControlNetHED.pth``,
``table5_pidinet.pth``) and the tiny zoo's small random ones load through one path.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import torch

from nodes.infra.files import ModelFileError, read_state_dict

HED_FILE = "ControlNetHED.pth"
PIDINET_FILE = "table5_pidinet.pth"
HED_LAYERS = (2, 2, 3, 3, 3)  # convolutions per block in ControlNetHED_Apache2


def build_hed(widths: tuple[int, ...] = (64, 128, 256, 512, 512)) -> torch.nn.Module:
    """controlnet_aux's ControlNetHED_Apache2 with the given block widths (published: 64…512)."""
    from controlnet_aux.hed import ControlNetHED_Apache2, DoubleConvBlock

    with torch.device("meta"):  # the published-size blocks are replaced right away
        net = ControlNetHED_Apache2()
    net.norm = torch.nn.Parameter(torch.zeros(1, 3, 1, 1))
    previous = 3
    for index, (width, layers) in enumerate(zip(widths, HED_LAYERS), start=1):
        setattr(net, f"block{index}", DoubleConvBlock(previous, width, layers))
        previous = width
    return net


def random_hed_state(widths: tuple[int, ...], seed: int) -> dict[str, torch.Tensor]:
    """A ControlNetHED state dict of the given widths with random (He-scaled) weights, written
    key by key so the tiny zoo need not import controlnet_aux."""
    gen = torch.Generator().manual_seed(seed)
    state = {"norm": torch.rand(1, 3, 1, 1, generator=gen) * 0.5}
    previous = 3
    for index, (width, layers) in enumerate(zip(widths, HED_LAYERS), start=1):
        for layer in range(layers):
            fan_in = (previous if layer == 0 else width) * 9
            shape = (width, previous if layer == 0 else width, 3, 3)
            state[f"block{index}.convs.{layer}.weight"] = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
            state[f"block{index}.convs.{layer}.bias"] = torch.zeros(width)
        state[f"block{index}.projection.weight"] = torch.randn(1, width, 1, 1, generator=gen) / width ** 0.5
        state[f"block{index}.projection.bias"] = torch.zeros(1)
        previous = width
    return state


@functools.cache
def _pidi_model() -> ModuleType:
    """controlnet_aux/pidi/model.py on its own: importing the controlnet_aux package runs its
    __init__, which imports every detector it has (seconds, and optional dependencies)."""
    found = importlib.util.find_spec("controlnet_aux")
    if found is None or not found.submodule_search_locations:
        raise ModuleNotFoundError("controlnet_aux is not installed")
    path = Path(next(iter(found.submodule_search_locations))) / "pidi" / "model.py"
    spec = importlib.util.spec_from_file_location("nodeloom_pidinet_model", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_pidinet(inplane: int = 60, dil: int = 24) -> torch.nn.Module:
    """controlnet_aux's PiDiNet, "carv4" pixel-difference convolutions with spatial attention as
    in ``table5_pidinet`` (published: inplane 60, dil 24)."""
    model = _pidi_model()
    return model.PiDiNet(inplane, model.config_model("carv4"), dil=dil, sa=True)


def load_hed(path: Path) -> torch.nn.Module:
    sd, _ = read_state_dict(path)
    widths = tuple(int(sd[f"block{i}.convs.0.weight"].shape[0]) for i in range(1, 6) if f"block{i}.convs.0.weight" in sd)
    if len(widths) != 5:
        raise ModelFileError(f"{Path(path).name} is not a ControlNetHED file (no block1..block5 convolutions)")
    return _load(build_hed(widths), sd, path)


def load_pidinet(path: Path) -> torch.nn.Module:
    sd, _ = read_state_dict(path)
    sd = {re.sub(r"^module\.", "", k): v for k, v in sd.items()}
    if "init_block.weight" not in sd or "dilations.0.conv1.weight" not in sd:
        raise ModelFileError(f"{Path(path).name} is not a PiDiNet file (no init_block / dilations weights)")
    net = build_pidinet(int(sd["init_block.weight"].shape[0]), int(sd["dilations.0.conv1.weight"].shape[0]))
    return _load(net, sd, path)


def _load(net: torch.nn.Module, sd: dict[str, torch.Tensor], path: Path) -> torch.nn.Module:
    result = net.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelFileError(f"{Path(path).name}: weights do not fit (missing {result.missing_keys[:5]}, "
                             f"unexpected {result.unexpected_keys[:5]})")
    return net.float().eval().requires_grad_(False)
