"""DistillFineTune's mixing weight follows its schedule, and the mixed loss is the stated formula."""

from __future__ import annotations

import math

import pytest
import torch

from nodes.training.mixing import distill_weight, mixed_loss


def test_linear_schedule_moves_from_distillation_to_denoising() -> None:
    weights = [distill_weight(s, 11, schedule="linear") for s in range(11)]
    assert weights == pytest.approx([1.0 - s / 10 for s in range(11)])


def test_cosine_schedule_is_slow_at_both_ends() -> None:
    weights = [distill_weight(s, 101, schedule="cosine", start=0.9, end=0.1) for s in range(101)]
    assert weights[0] == pytest.approx(0.9) and weights[-1] == pytest.approx(0.1)
    assert weights[50] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(weights, weights[1:]))
    assert weights[0] - weights[10] < weights[45] - weights[55]  # flat start, steep middle
    assert weights[25] == pytest.approx(0.1 + 0.8 * (1 + math.cos(math.pi / 4)) / 2)


def test_constant_and_single_step_runs() -> None:
    assert distill_weight(7, 10, schedule="constant", start=0.3, end=0.0) == 0.3
    assert distill_weight(0, 1, schedule="linear", start=1.0, end=0.2) == pytest.approx(0.2)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"schedule": "exp"}, "schedule 'exp' is not supported"),
    ({"start": 1.5}, r"distill_weight_start must be in \[0, 1\], got 1.5"),
    ({"end": -0.1}, r"distill_weight_end must be in \[0, 1\]"),
])
def test_bad_schedules_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        distill_weight(0, 10, **kwargs)
    with pytest.raises(ValueError, match="step 10 is outside a 10-step run"):
        distill_weight(10, 10)


def test_mixed_loss_is_the_weighted_sum() -> None:
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(3, 4, 8, 8, generator=gen, requires_grad=True)
    original, target = torch.randn(2, 3, 4, 8, 8, generator=gen)
    out = mixed_loss(student, original, target, 0.25)
    distill = torch.nn.functional.mse_loss(student, original)
    denoise = torch.nn.functional.mse_loss(student, target)
    torch.testing.assert_close(out.total, 0.25 * distill + 0.75 * denoise)
    assert out.distill == pytest.approx(distill.detach().item()) and out.denoise == pytest.approx(denoise.detach().item())
    out.total.backward()
    assert student.grad is not None
    # weight 1: only the original model matters; weight 0: only the data
    torch.testing.assert_close(mixed_loss(student, original, target, 1.0).total, distill)
    torch.testing.assert_close(mixed_loss(student, original, target, 0.0).total, denoise)
    weights = torch.tensor([1.0, 0.0, 0.0])
    per_sample = (student[:1] - target[:1]).pow(2).mean() / 3
    torch.testing.assert_close(mixed_loss(student, original, target, 0.0, weights).total, per_sample)
    with pytest.raises(ValueError, match=r"shapes differ: student \[3, 4, 8, 8\], original \[1, 4, 8, 8\]"):
        mixed_loss(student, original[:1], target, 0.5)


@pytest.mark.parametrize(("schedule", "start", "end", "never"), [
    ("constant", 0.0, 0.0, True), ("constant", 0.0, 1.0, True), ("linear", 0.0, 0.0, True),
    ("cosine", 0.0, 0.0, True), ("linear", 0.0, 0.5, False), ("constant", 0.1, 0.0, False)])
def test_a_run_whose_weight_is_zero_throughout_never_distils(schedule: str, start: float, end: float,
                                                              never: bool) -> None:
    from nodes.training.mixing import never_distils

    assert never_distils(schedule, start, end) is never
    weights = [distill_weight(s, 5, schedule=schedule, start=start, end=end) for s in range(5)]
    assert (max(weights) == 0.0) is never


def test_without_the_originals_output_the_loss_is_the_denoising_loss() -> None:
    student, target = torch.ones(2, 12, 4, 4), torch.zeros(2, 12, 4, 4)
    loss = mixed_loss(student, None, target, 0.0)
    assert float(loss.total) == 1.0 and loss.distill == 0.0 and loss.denoise == 1.0
    with pytest.raises(ValueError, match="needed at distillation weight 0.5"):
        mixed_loss(student, None, target, 0.5)
