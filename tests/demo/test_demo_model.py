"""The bundled demo model (nodes/demo/models, trained by workflows/train_demo.json) against the
issue's claims, on the 40 held-out prompts (colour/shape and colour/shape/background combinations
never seen in training), one picture each, at the demo's 4 SLAM steps (the SLAM proof: four each)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from nodes.demo import proofs
from nodes.demo.judge import judge
from nodes.demo.products import held_out_prompts

PROMPTS = held_out_prompts()


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return proofs.demo_context(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def models(ctx):  # noqa: ANN001, ANN201
    return proofs.load(ctx)


@pytest.fixture(scope="module")
def demo_pictures(ctx, models) -> torch.Tensor:  # noqa: ANN001
    return proofs.pictures(ctx, models, PROMPTS, student=True, steps=4, sampler="slam")


def test_colour_and_background_follow_the_prompt(demo_pictures: torch.Tensor) -> None:
    """The object's dominant colour and the background's are the asked ones in >= 95% (judged
    without the shape classifier: the colour judges read pixels only)."""
    from nodes.demo.judge import background_colour, object_colour
    from nodes.demo.products import parse_caption

    specs = [parse_caption(p) for p in PROMPTS]
    colours = sum(object_colour(p.numpy()) == s.colour for p, s in zip(demo_pictures, specs)) / len(specs)
    backgrounds = sum(background_colour(p.numpy()) == s.background for p, s in zip(demo_pictures, specs)) / len(specs)
    assert colours >= 0.95 and backgrounds >= 0.95, (colours, backgrounds)


@pytest.mark.slow
def test_shape_follows_the_prompt(demo_pictures: torch.Tensor) -> None:
    """A shape classifier trained separately on rendered shots (not the scorer; ~1 min to fit)
    recognises the asked shape in >= 90%."""
    verdict = judge(demo_pictures.numpy(), PROMPTS)
    assert verdict.shape_accuracy >= 0.90, [v for v in verdict.verdicts if not v.shape_hit]


@pytest.mark.slow
def test_slam_student_is_closer_to_the_teacher_25_steps_than_the_teacher_4_steps(ctx, models) -> None:  # noqa: ANN001
    """Same noise: the student's 4 deterministic steps (KSampler tcd, cfg 1) are closer to the
    teacher's DDIM 25 (cfg 3) than the teacher's own DDIM 4 (cfg 3) is, in mean MSE over the 40
    prompts x 4 noises (measured 0.0036 vs 0.0054; median 0.0033 vs 0.0042). 480 samplings: ~3 min."""
    errors = proofs.slam_errors(ctx, models, PROMPTS)
    assert errors["student"].mean() < errors["teacher"].mean(), {k: float(v.mean()) for k, v in errors.items()}
    assert errors["student"].median() < errors["teacher"].median(), {k: float(v.median()) for k, v in errors.items()}


def test_scorer_ranks_the_matching_caption_first_among_the_held_out_captions(ctx) -> None:  # noqa: ANN001
    """Among the 40 held-out captions, the trained scorer puts a held-out render's own caption first
    for >= 90% of the renders (measured 97.5%)."""
    assert proofs.caption_ranking(ctx, PROMPTS, candidates=PROMPTS) >= 0.90


def test_scorer_ranks_the_matching_caption_first_among_all_captions(ctx) -> None:  # noqa: ANN001
    """Among all 255 captions of the dataset's form (held-out ones included) likewise (measured 92.5%)."""
    assert proofs.caption_ranking(ctx, PROMPTS) >= 0.90


def test_nodeloom_demo_writes_an_upscaled_picture(tmp_path: Path) -> None:
    """The README's command: one 128x128 PNG (32 px x ESRGAN 4), the best of 2 candidates."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "graph_runtime.cli", "demo", "--n", "2", "--base", str(tmp_path),
                           "--no-progress", "--prompt", "a blue lamp on a yellow background"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    written = sorted((tmp_path / "output").glob("nodeloom_demo_*.png"))
    assert len(written) == 1 and Image.open(written[0]).size == (128, 128), done.stdout
