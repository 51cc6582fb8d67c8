"""TrainLoRA on the tiny SD1.5: the loss falls, the LoRA pulls images toward the data, both saved
files load in LoraLoader and in diffusers' load_lora_weights with the same outputs, and a run
interrupted or killed with SIGKILL resumes from its checkpoint to the uninterrupted result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from graph_runtime.context import Interrupted
from nodes.diffusion.nodes_latent import EmptyLatentImage, VAEDecode, VAEEncode
from nodes.diffusion.nodes_conditioning import CLIPTextEncode
from nodes.diffusion.nodes_loaders import LoraLoader
from nodes.diffusion.nodes_sampling import KSampler
from tests.training.training_ctx import CtxFactory
from tests.diffusion.diffusion_helpers import load, pipeline, to_image
from tests.training.lora_helpers import CAPTION, RED, SHORT, train_lora

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, zoo_root: Path) -> tuple[CtxFactory, Any]:
    from graph_runtime.folders import FolderPaths

    base = tmp_path_factory.mktemp("lora")
    make = CtxFactory(FolderPaths(base=base, models_roots=[base / "models", zoo_root]))  # apart from the zoo's
    return make, train_lora(make())


def _generate(ctx: Any, lora: str | None) -> dict:
    """Two samples of the caption (8 euler steps, cfg 5), with the LoRA at strength 1 or without."""
    model, clip, _ = load(ctx, "tiny-sd15.safetensors")
    if lora is not None:
        model, clip = LoraLoader().run(ctx, model=model, clip=clip, lora_name=lora, strength_model=1.0,
                                       strength_clip=1.0).outputs
    latent = EmptyLatentImage().run(ctx, width=64, height=64, batch_size=2)[0]
    positive = CLIPTextEncode().run(ctx, text=CAPTION, clip=clip)[0]
    negative = CLIPTextEncode().run(ctx, text="blurry", clip=clip)[0]
    return KSampler().run(ctx, model=model, seed=42, steps=8, cfg=5.0, sampler_name="euler", scheduler="normal",
                          positive=positive, negative=negative, latent_image=latent, denoise=1.0)[0]


def _distance_to_data(ctx: Any, samples: dict) -> float:
    """Mean distance of generated latents to the dataset image's latent. The tiny zoo's VAE has
    random weights: its decoder squeezes very different latents into similar noise-like pixels,
    so the sampler's output is compared where the model learnt the data."""
    _, _, vae = load(ctx, "tiny-sd15.safetensors")
    red = torch.tensor(RED, dtype=torch.float32).div(255).expand(1, 64, 64, 3)
    target = VAEEncode().run(ctx, pixels=red, vae=vae)[0]["samples"]
    return (samples["samples"] - target).abs().mean().item()


def test_loss_falls_and_the_lora_pulls_images_toward_the_data(trained: tuple[CtxFactory, Any]) -> None:
    make, result = trained
    lora_name, losses = result.outputs[0], result.outputs[1]["loss"]
    assert lora_name == "red.safetensors" and len(losses) == SHORT["steps"]
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10, losses
    ctx = make()
    trained_distance, base_distance = _distance_to_data(ctx, _generate(ctx, lora_name)), \
        _distance_to_data(ctx, _generate(ctx, None))
    assert trained_distance < 0.8 * base_distance, (trained_distance, base_distance)
    assert any(e.preview is not None for e in make.events) and "ETA" in [e.text for e in make.events if e.text][-1]
    assert [i["filename"] for i in result.ui["images"]] == ["step-000040.png", "loss.png"]


def test_kohya_file_has_alpha_and_both_files_load_with_the_same_outputs(trained: tuple[CtxFactory, Any]) -> None:
    make, result = trained
    ctx = make()
    kohya = load_file(str(ctx.folders.model_path("loras", "red.safetensors")))
    alphas = {k: v for k, v in kohya.items() if k.endswith(".alpha")}
    assert alphas and all(float(v) == SHORT["alpha"] for v in alphas.values())
    assert any(k.startswith("lora_te1_") for k in kohya) and any(k.startswith("lora_unet_") for k in kohya)
    _, _, vae = load(ctx, "tiny-sd15.safetensors")
    ours = VAEDecode().run(ctx, samples=_generate(ctx, "red.safetensors"), vae=vae)[0]
    diffusers_file = _generate(ctx, "red_diffusers/pytorch_lora_weights.safetensors")
    assert (VAEDecode().run(ctx, samples=diffusers_file, vae=vae)[0] - ours).abs().max() < 1e-4
    model, clip, vae = load(ctx, "tiny-sd15.safetensors")
    pipe = pipeline(ctx, model, clip, vae, "txt2img")
    for source in (ctx.folders.model_path("loras", "red.safetensors"), ctx.folders.model_path("loras", "red_diffusers")):
        pipe.load_lora_weights(str(source), adapter_name="trained")
        try:
            reference = pipe(CAPTION, negative_prompt="blurry", height=64, width=64, num_inference_steps=8,
                             guidance_scale=5.0, num_images_per_prompt=2, output_type="pt",
                             generator=[torch.Generator().manual_seed(42 + i) for i in range(2)]).images
        finally:
            pipe.unload_lora_weights()
        assert (to_image(reference) - ours).abs().max() < 1e-3, source


def test_interrupt_stops_after_the_step_with_a_checkpoint_then_resumes(make_ctx: CtxFactory) -> None:
    calls = []

    def report(node: str, value: float, maximum: float, preview: Any, text: Any) -> None:
        calls.append(value)
        if value == 3:
            make_ctx.interrupt.set()

    ctx = make_ctx()
    ctx.report_progress = report
    with pytest.raises(Interrupted):
        train_lora(ctx, steps=6, checkpoint_every=0, preview_every=0, sample_prompt="", train_text_encoder=False)
    # Asked for after step 3: step 4, already under way, finishes and is saved; nothing after it.
    assert calls[-1] == 3
    runs = list((make_ctx.folders.directory_for("output") / "training").iterdir())
    assert [p.name for p in (runs[0] / "checkpoints").iterdir()] == ["step-000004"]
    make_ctx.interrupt.clear()
    result = train_lora(make_ctx(), steps=6, checkpoint_every=0, preview_every=0, sample_prompt="",
                        train_text_encoder=False)
    assert len(result.outputs[1]["loss"]) == 6
    assert [e.value for e in make_ctx.events] == [4, 5, 6]  # continued, not restarted


def test_target_modules_matching_nothing_is_named_and_releases_the_models(make_ctx: CtxFactory) -> None:
    from nodes.infra.model_manager import manager_from

    ctx = make_ctx()
    with pytest.raises(ValueError, match="target_modules 'to_qq' matches no module of this UNet"):
        train_lora(ctx, steps=2, target_modules="to_qq", train_text_encoder=False)
    assert not any(entry["in_use"] for entry in manager_from(ctx.services).loaded())


KILLED_RUN = """
import sys
sys.path[:0] = [{repo!r} + "/tests/training", {repo!r}]
from graph_runtime.folders import FolderPaths
from training_ctx import CtxFactory
from lora_helpers import train_lora
from pathlib import Path
make = CtxFactory(FolderPaths(base=Path({base!r}), models_roots=[Path({base!r}) / "models", Path({zoo!r})]))
result = train_lora(make(), **{settings!r})
print("done", flush=True)
"""


@pytest.mark.slow
def test_sigkill_mid_run_resumes_from_the_checkpoint_to_the_uninterrupted_weights(
        tmp_path: Path, zoo_root: Path) -> None:
    from graph_runtime.folders import FolderPaths

    settings = dict(steps=30, checkpoint_every=5, preview_every=0, sample_prompt="", run_name="killed")
    base = tmp_path / "killed"
    script = KILLED_RUN.format(repo=str(REPO), base=str(base), zoo=str(zoo_root), settings=settings)
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    checkpoints = base / "output" / "training"
    while time.monotonic() < deadline and not list(checkpoints.glob("*/checkpoints/step-000010")):
        assert child.poll() is None, "the training process ended before it could be killed"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    make = CtxFactory(FolderPaths(base=base, models_roots=[base / "models", zoo_root]))
    resumed = train_lora(make(), **settings)
    first = [e.value for e in make.events][0]
    assert 10 <= first < 30, "resumed from a checkpoint, not from zero"
    whole = CtxFactory(FolderPaths(base=tmp_path / "whole", models_roots=[tmp_path / "whole" / "models", zoo_root]))
    reference = train_lora(whole(), **settings)
    assert resumed.outputs[1] == reference.outputs[1]
    ours = load_file(str(base / "models" / "loras" / "killed.safetensors"))
    expected = load_file(str(tmp_path / "whole" / "models" / "loras" / "killed.safetensors"))
    assert ours.keys() == expected.keys()
    assert all(torch.allclose(ours[k], expected[k], atol=1e-6) for k in ours)
