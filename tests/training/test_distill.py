"""DistillFineTune on the tiny SD1.5: λ follows the schedule step by step, the loss is the mixed
formula and falls, the saved LoRA loads in LoraLoader, and an interrupted run resumes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from graph_runtime.context import Context, Interrupted
from graph_runtime.folders import FolderPaths
from nodes.diffusion.nodes_loaders import CheckpointLoaderSimple, LoraLoaderModelOnly
from nodes.training.dataset import load_dataset
from nodes.training.distill import DistillFineTune
from nodes.training.mixing import distill_weight

WIDGETS = {i.name: i.default for i in DistillFineTune.inputs if i.is_widget}


@pytest.fixture
def ctx_factory(make_ctx: Any, tmp_path: Path, zoo_root: Path) -> Any:
    return type(make_ctx)(FolderPaths(base=tmp_path, models_roots=[tmp_path / "models", zoo_root]))


@pytest.fixture
def dataset(tmp_path: Path) -> Any:
    folder = tmp_path / "data"
    folder.mkdir()
    with open(folder / "metadata.jsonl", "w") as f:
        for i, colour in enumerate([(220, 30, 30), (200, 40, 60)]):
            Image.new("RGB", (64, 64), colour).save(folder / f"{i}.png")
            f.write(json.dumps({"file_name": f"{i}.png", "text": "a red square"}) + "\n")
    return load_dataset(folder, resolution=64, crop="center", flip=False, aspect_buckets=False,
                        caption_template="{}", caption_dropout=0.0)


def _inputs(ctx: Context, dataset: Any, **changes: Any) -> dict[str, Any]:
    model, clip, vae = CheckpointLoaderSimple().run(ctx, ckpt_name="tiny-sd15.safetensors")
    return {**WIDGETS, "model": model, "clip": clip, "vae": vae, "dataset": dataset, "steps": 12, "rank": 4,
            "alpha": 4.0, "learning_rate": 5e-3, "batch_size": 2, "checkpoint_every": 0, "preview_every": 0,
            "run_name": "distill", **changes}


def test_weight_follows_the_schedule_and_the_loss_is_the_mix(ctx_factory: Any, dataset: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from nodes.training import distill

    seen: list[tuple[int, float, float, float, float]] = []
    original = distill.DistillRecipe.loss

    def recording(self: Any, batch: Any, step: int) -> torch.Tensor:
        total = original(self, batch, step)
        seen.append((step, self.last.weight, total.item(), self.last.distill, self.last.denoise))
        return total

    monkeypatch.setattr(distill.DistillRecipe, "loss", recording)
    ctx = ctx_factory()
    result = DistillFineTune().run(ctx, **_inputs(ctx, dataset, schedule="cosine", distill_weight_start=0.9,
                                                  distill_weight_end=0.1))
    assert [s for s, *_ in seen] == list(range(1, 13))
    for step, weight, total, distill_part, denoise_part in seen:
        assert weight == pytest.approx(distill_weight(step - 1, 12, schedule="cosine", start=0.9, end=0.1))
        assert total == pytest.approx(weight * distill_part + (1 - weight) * denoise_part, rel=1e-5)
    assert seen[0][1] == pytest.approx(0.9) and seen[-1][1] == pytest.approx(0.1)
    assert seen[0][3] == pytest.approx(0.0, abs=1e-10)  # the LoRA starts at zero: student = original
    name = result.outputs[0]
    lora = LoraLoaderModelOnly().run(ctx, model=_inputs(ctx, dataset)["model"], lora_name=name, strength_model=1.0)
    assert len(lora.outputs[0].patches) == 1


def test_denoising_loss_falls_when_the_weight_moves_to_the_data(ctx_factory: Any, dataset: Any) -> None:
    ctx = ctx_factory()
    losses = DistillFineTune().run(ctx, **_inputs(ctx, dataset, steps=40, schedule="constant", learning_rate=2e-2,
                                                  distill_weight_start=0.0, seed=1, rank=8, alpha=8.0,
                                                  target_modules="to_q, to_k, to_v, to_out.0, proj_in, proj_out, "
                                                                 "ff.net.0.proj, ff.net.2")).outputs[1]["loss"]
    assert sum(losses[-10:]) < 0.85 * sum(losses[:10])


def test_interrupted_run_resumes(ctx_factory: Any, dataset: Any) -> None:
    f = ctx_factory

    def interrupt_at(node: str, value: float, maximum: float, preview: Any, text: Any) -> None:
        if value >= 3:
            f.interrupt.set()

    ctx = Context(prompt_id="test", node_id="1", class_type="test", folders=f.folders, services=f.services,
                  interrupt=f.interrupt, extra_data={}, report_progress=interrupt_at)
    inputs = _inputs(ctx, dataset, steps=6)
    with pytest.raises(Interrupted):
        DistillFineTune().run(ctx, **inputs)
    f.interrupt.clear()
    f.events.clear()
    resumed = DistillFineTune().run(f(), **inputs)
    assert f.events[0].value >= 3 and len(resumed.outputs[1]["loss"]) == 6
    fresh = DistillFineTune().run(f(), **{**inputs, "run_name": "fresh"})
    assert resumed.outputs[1]["loss"] == pytest.approx(fresh.outputs[1]["loss"], rel=1e-4, abs=1e-7)


def test_bad_schedule_is_named(ctx_factory: Any, dataset: Any) -> None:
    ctx = ctx_factory()
    with pytest.raises(ValueError, match=r"distill_weight_start must be in \[0, 1\]"):
        DistillFineTune().run(ctx, **_inputs(ctx, dataset, distill_weight_start=2.0))
