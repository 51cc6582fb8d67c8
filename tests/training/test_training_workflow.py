"""workflows/train_lora.json through the runtime: it trains, samples with what it trained, and the
output cache never hands back the result of an unfinished or vanished run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from graph_runtime.context import InterruptFlag
from graph_runtime.events import Event, Progress

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "train_lora.json"


def _runtime(tmp_path: Path, zoo_root: Path):
    from graph_runtime.executor import Runtime
    from graph_runtime.folders import FolderPaths
    from graph_runtime.registry import load_registry
    from nodes.diffusion.zoo import write_example_inputs

    folders = FolderPaths(base=tmp_path, models_roots=[tmp_path / "models", zoo_root])
    write_example_inputs(folders.input_dir)
    registry = load_registry(builtins=("nodes.core", "nodes.diffusion", "nodes.training"), entry_points=False)
    return Runtime(registry, folders=folders)


@pytest.mark.slow
def test_train_lora_workflow_interrupt_resume_and_cache(tmp_path: Path, zoo_root: Path) -> None:
    runtime = _runtime(tmp_path, zoo_root)
    prompt = json.loads(WORKFLOW.read_text())
    interrupt, steps = InterruptFlag(), []

    def listen(event: Event) -> None:
        if isinstance(event, Progress) and event.node_id == "3":
            steps.append(event.value)
            if event.value == 5:
                interrupt.set()

    cut = runtime.execute(prompt, listeners=[listen], interrupt=interrupt)
    assert cut.status == "interrupted" and "3" not in cut.cached
    steps.clear()
    done = runtime.execute(prompt, listeners=[listen])
    assert done.status == "success", done.error
    assert "3" in done.executed and steps[0] == 6, "the unfinished run was resumed, not cached nor restarted"
    images = done.outputs["10"]["images"]
    assert Image.open(runtime.folders.output_dir / images[0]["subfolder"] / images[0]["filename"]).size == (64, 64)
    trained = done.outputs["3"]["images"]
    assert [i["filename"] for i in trained] == ["step-000020.png", "loss.png"]
    assert "UNet 32 matched" in done.outputs["4"]["text"][0]

    again = runtime.execute(prompt)  # the finished run: returned from its folder, nothing trained
    assert again.status == "success"
    assert runtime.execute(prompt).executed == []  # then all cached while its folder is unchanged
    (tmp_path / "models" / "loras" / "nodeloom_red.safetensors").unlink()
    steps.clear()
    gone = runtime.execute(prompt, listeners=[listen])
    assert gone.status == "success" and "3" in gone.executed, "a cached name of a deleted LoRA was handed back"
    assert (tmp_path / "models" / "loras" / "nodeloom_red.safetensors").is_file() and steps == [20]


def test_a_workflow_of_one_training_node_is_a_valid_prompt(tmp_path: Path) -> None:
    """Training nodes write their models as their effect: they are output nodes, so a dataset and a
    trainer alone make a prompt (no "Prompt has no outputs"); every training node is one."""
    from graph_runtime import FolderPaths, HookContext, validate
    from graph_runtime.registry import load_registry
    from nodes.training.loop import TrainingNode

    registry = load_registry(builtins=("nodes.demo", "nodes.training"), entry_points=False)
    demo = json.loads((WORKFLOW.parent / "train_demo.json").read_text())
    prompt = {"2": demo["2"], "3": demo["3"]}  # its ProductShots and TrainCLIP, nothing after them
    result = validate(prompt, registry, ctx=HookContext(FolderPaths(base=tmp_path)))
    assert result.ok, result.format()
    trainers = [c for c in registry.nodes.values() if issubclass(c, TrainingNode)]
    assert len(trainers) == 5 and all(c.output_node for c in trainers)
