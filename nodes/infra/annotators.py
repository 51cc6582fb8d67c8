"""Soft-edge annotator networks (controlnet_aux's HED and PiDiNet), built at the size their file says.

controlnet_aux hard-codes the published sizes and reads files with a bare ``torch.load``; here the
files are read weights-only (``nodes.infra.files``) and the same controlnet_aux modules are built
with the widths found in the tensors, so the published files (``ControlNetHED.pth``,
``table5_pidinet.pth``) and the tiny zoo's small random ones load through one path.
"""

from __future__ import annotations

import re
from pathlib import Path

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


def build_pidinet(inplane: int = 60, dil: int = 24) -> torch.nn.Module:
    """controlnet_aux's PiDiNet, "carv4" pixel-difference convolutions with spatial attention as
    in ``table5_pidinet`` (published: inplane 60, dil 24)."""
    from controlnet_aux.pidi.model import PiDiNet, config_model

    return PiDiNet(inplane, config_model("carv4"), dil=dil, sa=True)


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
