"""A random-weight Inception v3 for FID in torch-fidelity's published layout
(``inception/weights-inception-2015-12-05-6726825d.pth``: the real architecture and keys, 23.9M
parameters), so the evaluation nodes and the sweep workflow run on the tiny zoo.

Stored in fp16 (46 MB instead of 92; loading casts to fp32). PyTorch's default initialisation
shrinks the signal through 90-odd layers until every feature is ~1e-7 and every FID ~0, so the
convolutions get He initialisation (He et al. 2015), which keeps the scale through ReLU layers:
the features stay of order one and FIDs are distinct numbers.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

FILE = "weights-inception-2015-12-05-6726825d.pth"


def random_inception(seed: int) -> torch.nn.Module:
    """torch-fidelity's FeatureExtractorInceptionV3 with random He-initialised weights."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # type: ignore[no-untyped-def]
            return None  # keep the random initialisation: there are no published weights here

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    torch.manual_seed(seed)
    model = _Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model.eval()


def save_inception(root: Path, seed: int) -> Path:
    path = root / "inception" / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in random_inception(seed).state_dict().items()}
    torch.save(state, path)
    return path
