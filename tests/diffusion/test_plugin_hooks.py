"""A folder plugin adds a sampler and a denoiser hook through the public hooks only, and a
KSampler workflow runs them (tests/diffusion/plugins/sampler_plugin)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
PLUGINS = Path(__file__).resolve().parent / "plugins"


@pytest.fixture(scope="module")
def runtime(zoo_root: Path, tmp_path_factory: pytest.TempPathFactory):
    from graph_runtime.executor import Runtime
    from graph_runtime.folders import FolderPaths
    from graph_runtime.registry import load_registry

    folders = FolderPaths(base=tmp_path_factory.mktemp("base"), models_roots=[zoo_root])
    registry = load_registry(plugin_dirs=[PLUGINS], builtins=("nodes.core", "nodes.diffusion"), entry_points=False)
    registry.startup({})
    return Runtime(registry, folders=folders)


def _image(runtime, prompt: dict) -> np.ndarray:
    result = runtime.execute(prompt)
    assert result.status == "success", result.error
    saved = result.outputs["9"]["images"][0]
    return np.asarray(Image.open(runtime.folders.output_dir / saved.get("subfolder", "") / saved["filename"]))


def _txt2img(sampler: str = "euler", scheduler: str = "normal", residual: float | None = None) -> dict:
    prompt = json.loads((WORKFLOWS / "txt2img.json").read_text())
    prompt["3"]["inputs"].update(sampler_name=sampler, scheduler=scheduler, steps=4)
    if residual is not None:
        prompt["20"] = {"class_type": "ConditioningSetTestResidual",
                        "inputs": {"conditioning": ["6", 0], "scale": residual}}
        prompt["3"]["inputs"]["positive"] = ["20", 0]
    return prompt


def test_plugin_loaded_without_errors(runtime) -> None:
    record = next(p for p in runtime.registry.plugins if p.name == "plugins.sampler_plugin")
    assert record.status == "loaded" and record.error is None, record.error
    assert "ConditioningSetTestResidual" in record.nodes


def test_plugin_sampler_is_a_choice_and_runs(runtime) -> None:
    import sys

    plugin = sys.modules["plugins.sampler_plugin"]
    ksampler = runtime.registry.get("KSampler")
    choices = next(i for i in ksampler.inputs if i.name == "sampler_name").current_choices(runtime.hook_context)
    assert "trailing_euler" in choices and "euler" in choices
    builds = len(plugin.BUILDS)
    ours = _image(runtime, _txt2img("trailing_euler", "normal"))
    assert len(plugin.BUILDS) == builds + 1
    # Euler on trailing timesteps is the built-in euler sampler with the "simple" spacing...
    assert np.array_equal(ours, _image(runtime, _txt2img("euler", "simple")))
    # ...and not the model's own (leading) spacing.
    assert not np.array_equal(ours, _image(runtime, _txt2img("euler", "normal")))


def test_denoiser_hook_residual_reaches_the_unet(runtime) -> None:
    import sys

    hook = sys.modules["plugins.sampler_plugin"].HOOK
    plain = _image(runtime, _txt2img())
    calls = hook.calls
    assert np.array_equal(_image(runtime, _txt2img(residual=0.0)), plain)
    assert hook.calls == calls  # a zero scale contributes nothing
    pushed = _image(runtime, _txt2img(residual=2.0))
    assert hook.calls == calls + 4  # one UNet call per step
    assert np.abs(pushed.astype(int) - plain.astype(int)).max() > 10


def test_unknown_sampler_is_still_rejected(runtime) -> None:
    from graph_runtime.validation import WorkflowInvalid

    with pytest.raises(WorkflowInvalid):
        runtime.execute(_txt2img("no_such_sampler"))
