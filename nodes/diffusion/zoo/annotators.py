"""Tiny soft-edge annotators in the published file layouts, for the soft-edge nodes:
``annotators/ControlNetHED.pth`` (a plain state dict) and ``annotators/table5_pidinet.pth``
(``{"state_dict": {"module.…": …}}``, as the PiDiNet release saves it), small random weights."""

from __future__ import annotations

from pathlib import Path

import torch

from nodes.infra.annotators import HED_FILE, PIDINET_FILE, build_pidinet, random_hed_state


def save_annotators(root: Path, seed: int) -> list[Path]:
    folder = root / "annotators"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    pidinet = build_pidinet(inplane=8, dil=8)
    torch.save(random_hed_state((8, 16, 16, 32, 32), seed), folder / HED_FILE)
    torch.save({"state_dict": {f"module.{k}": v for k, v in pidinet.state_dict().items()}}, folder / PIDINET_FILE)
    return [folder / HED_FILE, folder / PIDINET_FILE]
