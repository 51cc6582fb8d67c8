"""The shared training loop on a toy recipe (a linear map): every behaviour a recipe relies on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from graph_runtime.context import HookContext, Interrupted
from nodes.training.loop import (
    FinalOutputs, TrainingError, TrainSettings, resume_problem, seeded, train, training_fingerprint,
)
from nodes.training.run_folder import RunFolder


class LinearRecipe:
    """Fit y = W x + noise; the noise uses torch's global RNG, so a resume must restore it."""

    device = torch.device("cpu")

    def __init__(self, *, seed: int = 0, nan_at: int | None = None, on_loss: Any = None) -> None:
        data = torch.Generator().manual_seed(123)
        self.x = torch.randn(32, 4, generator=data)
        self.y = self.x @ torch.tensor([[1.0, -2.0], [0.5, 0.0], [0.0, 3.0], [-1.0, 1.0]])
        with seeded(seed):
            self.weight = torch.nn.Parameter(torch.randn(4, 2) * 0.1)
        self.nan_at, self.on_loss, self.closed, self.previews = nan_at, on_loss, False, 0

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        return {"weight": self.weight}

    def batch(self, step: int, micro: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, 32, (8,), generator=generator)

    def loss(self, batch: torch.Tensor, step: int) -> torch.Tensor:
        if self.on_loss is not None:
            self.on_loss(step)
        noisy = self.y[batch] + 0.01 * torch.randn(len(batch), 2)
        loss = torch.nn.functional.mse_loss(self.x[batch] @ self.weight, noisy)
        return loss * float("nan") if step == self.nan_at else loss

    def preview(self, step: int) -> torch.Tensor:
        self.previews += 1
        torch.randn(100)  # a preview drawing noise must not change the training
        return torch.full((8, 8, 3), 0.5)

    def save_final(self, folder: RunFolder) -> FinalOutputs:
        path = folder.path / "weight.pt"
        torch.save(self.weight.detach().clone(), path)
        return FinalOutputs({"weight_file": str(path)}, [path])

    def close(self) -> None:
        self.closed = True


SETTINGS = TrainSettings(steps=12, seed=3, learning_rate=0.3, optimizer="Adam", weight_decay=0.0,
                         lr_scheduler="cosine", lr_warmup_steps=2, checkpoint_every=5, preview_every=4)


def _folder(make_ctx: Any, name: str = "toy") -> RunFolder:
    return RunFolder.for_inputs(make_ctx.folders.directory_for("output"), name, {"lr": 0.05})


def _train(make_ctx: Any, recipe: LinearRecipe, settings: TrainSettings = SETTINGS, name: str = "toy"):
    return train(make_ctx(), lambda: recipe, settings, _folder(make_ctx, name), description={"lr": 0.05})


def test_trains_reports_progress_previews_and_checkpoints(make_ctx: Any) -> None:
    recipe = LinearRecipe()
    result = _train(make_ctx, recipe)
    assert result.trained_steps == 12 and result.resumed_from is None and recipe.closed
    assert len(result.losses) == 12 and sum(result.losses[-3:]) < sum(result.losses[:3]) / 2
    steps = [e for e in make_ctx.events if e.value > 0]
    assert [e.value for e in steps] == list(range(1, 13)) and {e.max for e in steps} == {12}
    text = steps[-1].text
    for part in ("step 12/12", "loss ", "smoothed ", "lr ", "it/s", "ETA"):
        assert part in text
    with_preview = [int(e.value) for e in steps if e.preview is not None]
    assert with_preview == [4, 8, 12] and steps[3].preview.data[:2] == b"\xff\xd8"  # JPEG
    folder = result.folder.path
    assert [p.name for p in sorted((folder / "checkpoints").iterdir())] == ["step-000010", "step-000012"]
    state = json.loads((folder / "state.json").read_text())
    assert state["status"] == "finished" and state["step"] == 12 and len(state["losses"]) == 12
    names = [image["filename"] for image in result.ui["images"]]
    assert names == ["step-000012.png", "loss.png"]
    assert all((folder / "previews" / n).is_file() for n in names)
    assert result.ui["images"][0]["subfolder"] == f"training/{folder.name}/previews"


def test_interrupt_checkpoints_the_step_and_resume_equals_an_uninterrupted_run(make_ctx: Any) -> None:
    reference = _train(make_ctx, LinearRecipe(), name="whole")
    expected = torch.load(reference.values["weight_file"])

    def interrupt_at_7(step: int) -> None:
        if step == 7:
            make_ctx.interrupt.set()

    interrupted = LinearRecipe(on_loss=interrupt_at_7)
    with pytest.raises(Interrupted):
        _train(make_ctx, interrupted, name="cut")
    folder = _folder(make_ctx, "cut")
    assert folder.latest_checkpoint()[0] == 7  # stopped after the step in progress, and saved it
    assert folder.state()["status"] == "interrupted" and interrupted.closed
    make_ctx.interrupt.clear()
    resumed = _train(make_ctx, LinearRecipe(seed=99), name="cut")  # other init: the checkpoint wins
    assert resumed.resumed_from == 7 and resumed.trained_steps == 5
    assert torch.equal(torch.load(resumed.values["weight_file"]), expected)
    assert resumed.losses == reference.losses


def test_finished_run_returns_its_outputs_without_building_the_recipe(make_ctx: Any) -> None:
    first = _train(make_ctx, LinearRecipe())

    def never() -> LinearRecipe:
        raise AssertionError("a finished run must not load anything")

    again = train(make_ctx(), never, SETTINGS, _folder(make_ctx), description={"lr": 0.05})
    assert again.values == first.values and again.losses == first.losses and again.trained_steps == 0
    Path(first.values["weight_file"]).unlink()  # its file gone: trained again (resumed at the end)
    third = _train(make_ctx, LinearRecipe())
    assert third.trained_steps == 0 and third.resumed_from == 12 and Path(third.values["weight_file"]).is_file()


def test_a_result_file_another_run_overwrote_is_saved_again(make_ctx: Any, tmp_path: Path) -> None:
    # Runs with one run_name and other inputs write the same file (models/loras/<run_name>...).
    shared = tmp_path / "shared.pt"

    class SharedFile(LinearRecipe):
        def save_final(self, folder: RunFolder) -> FinalOutputs:
            torch.save(self.weight.detach().clone(), shared)
            return FinalOutputs({"weight_file": str(shared)}, [shared])

    _train(make_ctx, SharedFile())
    mine = torch.load(shared)
    hook = HookContext(folders=make_ctx.folders)
    fingerprint = training_fingerprint(hook, {"run_name": "toy", "resume_from": ""})
    _train(make_ctx, SharedFile(), TrainSettings(**{**SETTINGS.__dict__, "seed": 4}), name="toy-other")
    assert not torch.equal(torch.load(shared), mine)
    assert training_fingerprint(hook, {"run_name": "toy", "resume_from": ""}) != fingerprint
    again = _train(make_ctx, SharedFile())
    assert again.trained_steps == 0 and again.resumed_from == 12  # re-saved from its last checkpoint
    assert torch.equal(torch.load(shared), mine)


def test_gradient_accumulation_equals_the_whole_batch(make_ctx: Any) -> None:
    class Halves(LinearRecipe):
        def batch(self, step: int, micro: int, generator: torch.Generator) -> torch.Tensor:
            whole = torch.arange(16)
            return whole if self.n == 1 else whole[micro * 8:(micro + 1) * 8]

        def loss(self, batch: torch.Tensor, step: int) -> torch.Tensor:
            return torch.nn.functional.mse_loss(self.x[batch] @ self.weight, self.y[batch])

    one, two = Halves(), Halves()
    one.n, two.n = 1, 2
    plain = TrainSettings(steps=3, learning_rate=0.1, optimizer="SGD", betas=(0.0, 0.0), weight_decay=0.0,
                          max_grad_norm=0.0, checkpoint_every=0, preview_every=0)
    _train(make_ctx, one, plain, name="one")
    _train(make_ctx, two, TrainSettings(**{**plain.__dict__, "gradient_accumulation": 2}), name="two")
    assert torch.allclose(one.weight, two.weight, atol=1e-6)


def test_gradient_clipping_bounds_the_update(make_ctx: Any) -> None:
    recipe = LinearRecipe()
    before = recipe.weight.detach().clone()
    settings = TrainSettings(steps=1, learning_rate=1.0, optimizer="SGD", betas=(0.0, 0.0), weight_decay=0.0,
                             max_grad_norm=0.01, preview_every=0)
    _train(make_ctx, recipe, settings)
    assert (recipe.weight.detach() - before).norm() == pytest.approx(0.01, rel=1e-4)


def test_non_finite_loss_names_the_step_and_keeps_the_last_checkpoint(make_ctx: Any) -> None:
    with pytest.raises(TrainingError, match="loss is nan at step 6"):
        _train(make_ctx, LinearRecipe(nan_at=6))
    folder = _folder(make_ctx)
    assert folder.latest_checkpoint()[0] == 5 and folder.state()["status"] == "failed"


def test_fingerprint_follows_the_run_folder_and_resume_from_is_checked(make_ctx: Any) -> None:
    hook = HookContext(folders=make_ctx.folders)
    widgets = {"run_name": "toy", "resume_from": ""}
    empty = training_fingerprint(hook, widgets)

    def interrupt_at_3(step: int) -> None:
        if step == 3:
            make_ctx.interrupt.set()

    with pytest.raises(Interrupted):
        _train(make_ctx, LinearRecipe(on_loss=interrupt_at_3))
    unfinished = training_fingerprint(hook, widgets)
    make_ctx.interrupt.clear()
    result = _train(make_ctx, LinearRecipe())
    finished = training_fingerprint(hook, widgets)
    assert len({json.dumps(x) for x in (empty, unfinished, finished)}) == 3
    assert training_fingerprint(hook, widgets) == finished  # stable while nothing changes
    Path(result.values["weight_file"]).unlink()
    assert training_fingerprint(hook, widgets) != finished
    assert resume_problem(hook, result.folder.path.name) is None
    assert "not a training run folder" in resume_problem(hook, "nope")
    assert "refusing" in resume_problem(hook, "../etc")


def test_warmup_steps_the_constant_schedule_would_ignore_are_refused(make_ctx: Any) -> None:
    from nodes.training.lora import TrainLoRA

    settings = TrainSettings(**{**SETTINGS.__dict__, "lr_scheduler": "constant", "lr_warmup_steps": 2})
    with pytest.raises(TrainingError, match="lr_warmup_steps 2 has no effect with lr_scheduler constant"):
        _train(make_ctx, LinearRecipe(), settings)
    hook = HookContext(folders=make_ctx.folders)
    assert "use constant_with_warmup" in TrainLoRA.validate_inputs(hook, lr_scheduler="constant", lr_warmup_steps=5)
    assert TrainLoRA.validate_inputs(hook, lr_scheduler="constant_with_warmup", lr_warmup_steps=5) is None


def test_resuming_with_another_step_count_says_what_to_do(make_ctx: Any) -> None:
    def interrupt_at_3(step: int) -> None:
        if step == 3:
            make_ctx.interrupt.set()

    with pytest.raises(Interrupted):
        _train(make_ctx, LinearRecipe(on_loss=interrupt_at_3), name="longer")
    make_ctx.interrupt.clear()
    from dataclasses import replace

    with pytest.raises(TrainingError, match="run of 12 steps, not 40.*another run_name, resume_from empty"):
        _train(make_ctx, LinearRecipe(), replace(SETTINGS, steps=40), name="longer")
