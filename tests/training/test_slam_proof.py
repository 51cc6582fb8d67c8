"""The SLAM proof on a real (tiny) denoiser: a teacher UNet trained from scratch with our own
training node, then distilled with TrainSLAM, compared from the same initial noise with the
teacher's 50-step DDIM samples (MSE on latents).

The data: eight fixed random 4×4-block RGB patterns (16-pixel cells) under one caption, encoded by
the tiny zoo's VAE with its scaling factor set to 1/std of their latents (the LDM paper's rule for
SD's 0.18215). Eight well-separated modes with spatial structure make the probability-flow ODE
curve, so the teacher's own 4-step DDIM is visibly off its 50-step result. (With the zoo VAE's
own factor every image encodes to nearly the same latent, std 0.04: the data are then one point,
the ODE is straight, and there is nothing to distil.)

Like is compared with like:

- **deterministic**: the student's 1-step output f(z_T) (SLAMSampler, 1 step: no re-noising) and
  its 4-step sampling with deterministic re-noising (KSampler ``tcd``, whose ``eta`` (TCD's γ) is
  0 here: each step re-noises the student's own x0 estimate with its own noise estimate, a DDIM
  step on the LCM grid 999, 759, 499, 259, so the sample stays on the initial noise's trajectory).
  These are the issue's "student 4-step samples" and what the proof asserts about.
- **SLAMSampler as users run it** (LCM multistep sampling): fresh noise at each re-noising leaves the
  initial noise's trajectory, so its end point is another sample of the distribution, not the
  DDIM-50 end of z_T; it is measured and printed, and cannot be expected to win in MSE.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from graph_runtime.folders import FolderPaths
from nodes.diffusion import vae_ops
from nodes.diffusion.nodes_conditioning import CLIPTextEncode
from nodes.diffusion.nodes_loaders import CheckpointLoaderSimple, LoraLoaderModelOnly
from nodes.diffusion.nodes_sampling import KSampler
from nodes.infra.model_manager import manager_from
from nodes.slam.sampler import SLAMSampler
from nodes.training.dataset import load_dataset
from nodes.training.distill import DistillFineTune
from nodes.training.slam import TrainSLAM
from tests.training.training_ctx import CtxFactory

CAPTION = "a pattern"
SEEDS = 8


def _patterns(folder: Path) -> torch.Tensor:
    """[8, 64, 64, 3] IMAGE of fixed random 4×4 black/colour blocks, also written with captions."""
    blocks = torch.rand(8, 4, 4, 3, generator=torch.Generator().manual_seed(0)).round()
    images = blocks.repeat_interleave(16, 1).repeat_interleave(16, 2)
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray((image * 255).byte().numpy()).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(CAPTION)
    return images


def _teacher(ctx: Any, tmp_path: Path) -> str:
    images = _patterns(tmp_path / "patterns")
    model, clip, vae = CheckpointLoaderSimple().run(ctx, ckpt_name="tiny-sd15.safetensors")
    latents = vae_ops.encode(manager_from(ctx.services), vae, images)
    vae = dataclasses.replace(vae, scaling_factor=vae.scaling_factor / float(latents.std()))
    dataset = load_dataset(tmp_path / "patterns", resolution=64, crop="center", flip=False, aspect_buckets=False,
                           caption_template="{caption}", caption_dropout=0.0)
    widgets = {i.name: i.default for i in DistillFineTune.inputs if i.is_widget}
    result = DistillFineTune().run(ctx, **{
        **widgets, "model": model, "clip": clip, "vae": vae, "dataset": dataset, "weights": "from_scratch",
        "unet_config": json.dumps({"block_out_channels": [32, 64], "norm_num_groups": 16}), "run_name": "teacher",
        "steps": 400, "batch_size": 8, "learning_rate": 2e-3, "lr_scheduler": "cosine", "schedule": "constant",
        "distill_weight_start": 0.0, "distill_weight_end": 0.0, "checkpoint_every": 0, "preview_every": 0})
    return result.outputs[2]


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return round(float((a - b).pow(2).mean()), 4)


# The settings that distil this teacher (docs/training.md, "The 4-step proof"): plain LCM (sub_path off),
# pseudo-Huber loss, an EMA target (decay 0.95, SLAM's and diffusers' full-model LCM value).
STUDENT = dict(prompts=CAPTION, width=64, height=64, samples_per_prompt=16, teacher_steps=50, steps=1000,
               learning_rate=1e-3, batch_size=4, gradient_accumulation=1, lora_rank=16, lora_alpha=16.0,
               guidance_min=1.0, guidance_max=1.0, sub_path=False, loss="huber", target="ema", ema_decay=0.95, seed=0,
               precision="auto", checkpoint_every=0, preview_every=0, lora_name="slam_proof", run_name="slam",
               resume_from="")


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory, zoo_root: Path) -> dict[str, float]:
    """MSE to the teacher's 50-step DDIM samples (8 seeds, same initial noise), trained once."""
    tmp_path = tmp_path_factory.mktemp("slam_proof")
    ctx = CtxFactory(FolderPaths(base=tmp_path, models_roots=[tmp_path / "models", zoo_root]))()
    teacher, clip, _ = CheckpointLoaderSimple().run(ctx, ckpt_name=_teacher(ctx, tmp_path))
    lora = TrainSLAM().run(ctx, model=teacher, clip=clip, **STUDENT).outputs[0]
    student = LoraLoaderModelOnly().run(ctx, model=teacher, lora_name=lora, strength_model=1.0).outputs[0]
    positive = CLIPTextEncode().run(ctx, clip=clip, text=CAPTION)[0]
    latent = {"samples": torch.zeros(SEEDS, 4, 8, 8)}

    def ksample(model: Any, steps: int, sampler: str) -> torch.Tensor:
        return KSampler().run(ctx, model=model, seed=11, steps=steps, cfg=1.0, sampler_name=sampler,
                              scheduler="sgm_uniform", positive=positive, negative=positive, latent_image=latent,
                              denoise=1.0)[0]["samples"]

    def slam(model: Any, steps: int) -> torch.Tensor:
        return SLAMSampler().run(ctx, model=model, positive=positive, negative=positive, latent_image=latent, seed=11,
                                 steps=steps, cfg=1.0, denoise=1.0)[0]["samples"]

    reference = ksample(teacher, 50, "ddim")
    out = {"teacher ddim 4": _mse(ksample(teacher, 4, "ddim"), reference)}
    for name, model in (("teacher", teacher), ("student", student)):
        out[f"{name} 1-step f(z_T)"] = _mse(slam(model, 1), reference)
        out[f"{name} tcd 4 (deterministic)"] = _mse(ksample(model, 4, "tcd"), reference)
        out[f"{name} SLAMSampler 4 (fresh noise)"] = _mse(slam(model, 4), reference)
    print("MSE to the teacher's 50-step DDIM samples:", out)
    return out


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the module's training (teacher, then student) runs in this setup: 2.6 min alone
def test_student_one_step_is_closer_to_the_teacher_ode_end_than_the_teacher_one_step(figures: dict[str, float]) -> None:
    """Distillation moves the student's f(z_T) toward the DDIM-50 end of z_T: measured 2.85 -> 1.48 at 1200
    steps, 2.85 -> 1.57 at the 1000 steps run here (docs/training.md); the margin asked is a quarter."""
    assert figures["student 1-step f(z_T)"] < 0.75 * figures["teacher 1-step f(z_T)"], figures


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.xfail(strict=True, reason="not met: the plain-LCM student's deterministic 4 steps stay behind the teacher's "
                   "DDIM 4 (best measured 0.133 vs 0.098: 1200 steps, batch 16, EMA target; docs/training.md)")
def test_student_4_steps_are_closer_to_the_teacher_50_steps_than_the_teacher_4_steps(figures: dict[str, float]) -> None:
    assert figures["student tcd 4 (deterministic)"] < figures["teacher ddim 4"], figures
    assert figures["student tcd 4 (deterministic)"] < figures["teacher tcd 4 (deterministic)"], figures


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_distilling_the_demo_teacher_beats_its_own_4_steps(tmp_path: Path) -> None:
    """The issue's 4-step claim on a real small teacher: the demo's pixel UNet (10.9M parameters,
    trained from scratch by DistillFineTune, nodes/demo/models) distilled here by TrainSLAM with
    workflows/train_demo.json's settings (400 steps, batch 32; about 15 min on 2 cores, TrainSLAM 11
    of them). From the same noise, on the 40 held-out prompts x 4 noises, its deterministic 4 steps
    are closer to the teacher's DDIM 50 than the teacher's own DDIM 4, in mean and in median MSE
    (measured: mean 0.0034 vs 0.0060, median 0.0031 vs 0.0047)."""
    from nodes.demo import proofs
    from nodes.demo.products import held_out_prompts

    ctx = proofs.demo_context(tmp_path)
    teacher, clip, vae = CheckpointLoaderSimple().run(ctx, ckpt_name=proofs.CHECKPOINT)
    demo = json.loads((Path(__file__).resolve().parents[2] / "workflows" / "train_demo.json").read_text())
    settings = {k: v for k, v in demo["7"]["inputs"].items() if k not in ("model", "clip")}
    lora = TrainSLAM().run(ctx, model=teacher, clip=clip, **{**settings, "lora_name": "slam_proof",
                                                             "checkpoint_every": 0, "preview_every": 0}).outputs[0]
    assert (tmp_path / "models" / "loras" / lora).is_file()  # the bundled LoRA is not what is measured
    student = LoraLoaderModelOnly().run(ctx, model=teacher, lora_name=lora, strength_model=1.0).outputs[0]
    errors = proofs.slam_errors(ctx, proofs.DemoModels(teacher, student, clip, vae), held_out_prompts(),
                                reference_steps=50)
    figures = {k: (round(float(v.mean()), 5), round(float(v.median()), 5)) for k, v in errors.items()}
    print("MSE to the teacher's DDIM 50 (mean, median):", figures)
    assert errors["student"].mean() < errors["teacher"].mean(), figures
    assert errors["student"].median() < errors["teacher"].median(), figures
