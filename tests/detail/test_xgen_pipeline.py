"""workflows/xgen_pipeline.json: generate N -> PickScore best -> face touch-up -> ESRGAN x4 -> save,
every family's nodes in one graph, on the tiny zoo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from graph_runtime import Runtime, load_registry
from graph_runtime.folders import FolderPaths

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "xgen_pipeline.json"


def test_xgen_pipeline_keeps_the_best_candidate_and_upscales_it(zoo_root, tmp_path) -> None:
    registry = load_registry(builtins=("nodes.core", "nodes.diffusion", "nodes.detail", "nodes.scoring",
                                       "nodes.upscale"), entry_points=False)
    folders = FolderPaths(base=tmp_path, models_roots=[zoo_root])
    prompt = json.loads(WORKFLOW.read_text())
    prompt["15"]["inputs"].update(guide_size=64, max_size=128, steps=2)  # CI-sized
    result = Runtime(registry, folders=folders).execute(prompt, keep=["8", "11", "12", "15"])
    assert result.status == "success", result.error

    candidates = result.values["8"][0][0]
    ranked, best, scores = result.values["11"][0][0], result.values["11"][1][0], result.values["11"][2]
    assert candidates.shape[0] == 4 and best.shape[0] == 1
    assert scores == sorted(scores, reverse=True)
    assert any(torch.equal(best[0], c) for c in candidates)  # the best is one of the N, untouched
    assert torch.equal(ranked[0], best[0])
    if not result.values["12"][0][0]:  # no face found: the touch-up leaves the image as it was
        assert torch.equal(result.values["15"][0][0], best)

    saved = result.outputs["9"]["images"][0]
    out = np.asarray(Image.open(folders.output_dir / saved.get("subfolder", "") / saved["filename"]))
    assert out.shape == (256, 256, 3)  # 64 x 4
