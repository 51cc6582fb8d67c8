"""The denoising loop behind KSampler and KSamplerAdvanced.

It follows diffusers' StableDiffusion(XL) txt2img / img2img / inpaint pipelines step for step
(same scheduler calls, same noise, same classifier-free guidance batch), so a graph gives the
pipeline's image for the same seed and settings. ComfyUI's meanings are kept where they differ:
``steps`` is the number of steps run, ``denoise`` shortens the schedule (steps / denoise in all),
and the noise of sample ``i`` comes from its own generator seeded ``seed + i`` (CPU, so results
do not depend on the device or on the batch size).
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from nodes.diffusion.denoiser import DENOISER_HOOKS, Denoiser
from nodes.diffusion.families import DEFAULT_FAMILY, FamilySpec
from nodes.diffusion.guidance import ModelExtras, choose_guidance
from nodes.diffusion.inpaint import inpaint_inputs
from nodes.diffusion.models import Conditioning, DiffusionModel
from nodes.diffusion.samplers import SAMPLERS, schedule_problem
from nodes.infra.model_manager import ModelManager

StepCallback = Callable[[int, int, torch.Tensor], None]


@dataclass(frozen=True)
class SampleSettings:
    seed: int
    steps: int
    cfg: float
    sampler_name: str
    scheduler: str
    denoise: float = 1.0
    # KSamplerAdvanced: a window of an ``steps``-step schedule.
    start_step: int | None = None
    end_step: int | None = None
    add_noise: bool = True
    return_leftover_noise: bool = False


def generators_for(seed: int, count: int, batch_index: list[int] | None = None) -> list[torch.Generator]:
    """Per-sample CPU generators (seed + index): sample i is the same whatever the batch. They
    give the initial noise and then the ancestral samplers' step noise, as in the pipelines."""
    indices = batch_index if batch_index is not None else list(range(count))
    return [torch.Generator("cpu").manual_seed((seed + int(i)) % 2**64) for i in indices]


def make_noise(shape: tuple[int, ...], generators: list[torch.Generator]) -> torch.Tensor:
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(shape, generator=generators, device=torch.device("cpu"), dtype=torch.float32)


def sample(manager: ModelManager, model: DiffusionModel, positive: Conditioning, negative: Conditioning,
           latent: dict[str, Any], settings: SampleSettings, *, on_step: StepCallback | None = None) -> dict[str, Any]:
    """Denoise ``latent["samples"]``; returns a new LATENT dict. An empty latent made for another
    family is first replaced by the model's (:func:`fit_latent`)."""
    latent = fit_latent(latent, model.spec)
    latent_image = latent["samples"].float()
    batch = latent_image.shape[0]
    total, first, last = _window(settings)
    if first >= last:
        return dict(latent)
    factory = SAMPLERS.get(settings.sampler_name)
    scheduler = SAMPLERS.build(model.scheduler_config, settings.sampler_name, settings.scheduler, seed=settings.seed)
    _check_zero_snr(model.scheduler_config, scheduler, settings.sampler_name)
    _check_prediction_type(model.scheduler_config, scheduler, settings.sampler_name)
    _check_grid(scheduler, settings)
    with model.use(manager) as unet:
        device, dtype = next(unet.parameters()).device, next(unet.parameters()).dtype
        scheduler.set_timesteps(total, device=device)
        order = scheduler.order
        timesteps = scheduler.timesteps[first * order: last * order]
        if first > 0 and hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(first * order)  # as the img2img pipelines do
        batch_index = latent.get("batch_index")
        generators = generators_for(settings.seed, batch, batch_index)
        noise = make_noise(tuple(latent_image.shape), generators).to(device)
        clean = latent_image.to(device)
        mask = _latent_mask(latent.get("noise_mask"), latent_image.shape, device)
        x = _initial(scheduler, clean, noise, timesteps, settings, first, mask)
        unet_config = dict(unet.config)
        denoiser = Denoiser(unet, model.spec, positive=positive, negative=negative,
                            guidance=choose_guidance(settings.cfg, unet_config, factory.guidance),
                            extras=ModelExtras(model.spec, unet_config, settings.cfg, tuple(latent_image.shape[-2:])),
                            batch=batch, steps=len(timesteps), hooks=list(DENOISER_HOOKS),
                            inpaint=inpaint_inputs(unet_config, latent, model.spec.latent_channels))
        step_kwargs = _step_kwargs(scheduler, generators)
        denoised = x
        for i, t in enumerate(timesteps):
            model_in = scheduler.scale_model_input(torch.cat([x] * denoiser.copies), t)
            eps = denoiser(model_in.to(dtype), t, i).float()
            out = scheduler.step(eps, t, x, **step_kwargs, return_dict=True)
            x = out.prev_sample
            denoised = getattr(out, "pred_original_sample", None)
            if denoised is None:  # LCMScheduler names its x0 estimate "denoised"
                denoised = getattr(out, "denoised", None)
            if mask is not None:
                proper = clean
                if i < len(timesteps) - 1:
                    proper = scheduler.add_noise(clean, noise, timesteps[i + 1: i + 2])
                x = (1 - mask) * proper + mask * x
            if on_step is not None:
                on_step(i + 1, len(timesteps), denoised if denoised is not None else x)
        if last < total:
            if settings.return_leftover_noise:
                x = x / _model_space_scale(scheduler, last * order)
            elif denoised is not None:
                x = denoised if mask is None else (1 - mask) * clean + mask * denoised
    out_latent = dict(latent)
    out_latent["samples"] = x.float().cpu()
    return out_latent


def fit_latent(latent: dict[str, Any], spec: FamilySpec) -> dict[str, Any]:
    """``latent`` in ``spec``'s latent shape. An all-zero latent of another shape (EmptyLatentImage
    makes SD's [B, 4, H/8, W/8]) becomes zeros of the family's shape for the same pixel size, its
    noise mask kept (masks are resized to the latent when sampling): ComfyUI's
    ``fix_empty_latent_channels`` with the family's scale factor, the pixel size read from the
    latent's ``downscale_ratio_spacial`` (ComfyUI's key; 8 when absent). Raises ValueError naming
    ``latent_image``, both shapes and the family for a non-empty latent of another shape."""
    samples = latent["samples"]
    ratio = int(latent.get("downscale_ratio_spacial") or DEFAULT_FAMILY.vae_scale_factor)
    fits = samples.ndim == 4 and samples.shape[1] == spec.latent_channels
    if fits and ("downscale_ratio_spacial" not in latent or ratio == spec.vae_scale_factor):
        return latent
    height, width = samples.shape[-2] * ratio, samples.shape[-1] * ratio
    wanted = spec.latent_shape(samples.shape[0], height, width)
    if samples.ndim != 4 or bool(samples.abs().sum()):
        raise ValueError(
            f"latent_image: a {list(samples.shape)} latent does not fit this {spec.name} model ({spec.title}), "
            f"whose latents are [B, {spec.latent_channels}, H/{spec.vae_scale_factor}, W/{spec.vae_scale_factor}] "
            f"({list(wanted)} for {width}x{height} pixels); encode the image with this model's VAE or start from "
            f"EmptyLatentImage")
    return {**latent, "samples": torch.zeros(wanted, dtype=samples.dtype),
            "downscale_ratio_spacial": spec.vae_scale_factor}


def _check_zero_snr(config: dict[str, Any], scheduler: Any, sampler_name: str) -> None:
    """ModelSamplingDiscrete(zsnr=True) asks for rescaled betas; diffusers ignores the option in
    schedulers without it, so refuse rather than sample without it."""
    supported = "rescale_betas_zero_snr" in inspect.signature(type(scheduler).__init__).parameters
    if config.get("rescale_betas_zero_snr") and not supported:
        raise ValueError(f"sampler {sampler_name!r} ({type(scheduler).__name__}) cannot rescale the noise schedule "
                         f"to zero terminal SNR (ModelSamplingDiscrete zsnr); use euler, euler_ancestral, "
                         f"dpmpp_2m, ddim or uni_pc")


def _check_prediction_type(config: dict[str, Any], scheduler: Any, sampler_name: str) -> None:
    """Some diffusers schedulers cannot step an x0 (``sample``) model; they say so only from inside
    ``step``, after a whole UNet call, as a bare NotImplementedError. Refuse before sampling."""
    prediction = str(config.get("prediction_type", "epsilon"))
    if prediction != "epsilon" and not _steps_prediction(type(scheduler), prediction):
        comfy = {"sample": "x0"}.get(prediction, prediction)
        raise ValueError(f"sampler {sampler_name!r} ({type(scheduler).__name__}) cannot sample a model predicting "
                         f"{comfy} (ModelSamplingDiscrete sampling={comfy}); use euler, heun, dpmpp_2m, ddim or uni_pc")


@functools.cache
def _steps_prediction(cls: type, prediction: str) -> bool:
    """Whether scheduler class ``cls`` steps a ``prediction`` model: one step on a 1-pixel sample
    (schedulers do not declare it). Anything but NotImplementedError leaves it to the real run."""
    try:
        with warnings.catch_warnings():  # the probe's own numerics are not the user's concern
            warnings.simplefilter("ignore")
            scheduler = cls(prediction_type=prediction)
            scheduler.set_timesteps(2)
            step = scheduler.timesteps[0]
            sample = scheduler.scale_model_input(torch.zeros(1, 1, 1, 1), step)
            scheduler.step(sample, step, sample)
    except NotImplementedError:
        return False
    except Exception:  # noqa: BLE001 - a scheduler that cannot be probed this way is not refused
        return True
    return True


def _check_grid(scheduler: Any, s: SampleSettings) -> None:
    """Refuse a schedule longer than the distillation grid LCM/TCD pick from (steps linked from
    another node skip validation); diffusers' own error speaks of a ``strength`` nobody set. Other
    schedulers keep the option in their config unused (ModelSamplingDiscrete lcm pins it)."""
    if "original_inference_steps" not in inspect.signature(type(scheduler).__init__).parameters:
        return
    grid = scheduler.config.get("original_inference_steps")
    windowed = s.start_step is not None or s.end_step is not None  # KSamplerAdvanced: no denoise
    if (problem := schedule_problem(s.sampler_name, s.steps, 1.0 if windowed else s.denoise, grid)) is not None:
        raise ValueError(problem)


def _window(s: SampleSettings) -> tuple[int, int, int]:
    """(schedule length, first step, end step) in schedule steps."""
    if s.start_step is not None or s.end_step is not None:
        start = s.start_step or 0
        end = s.steps if s.end_step is None else min(s.end_step, s.steps)
        return s.steps, start, end
    if s.denoise <= 0.0:
        return s.steps, s.steps, s.steps
    total = s.steps if s.denoise >= 1.0 else int(s.steps / s.denoise)
    return total, total - s.steps, total


def _initial(scheduler: Any, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
             s: SampleSettings, first: int, mask: torch.Tensor | None) -> torch.Tensor:
    if not s.add_noise:
        # A latent handed over with leftover noise is in sigma space (x0 + sigma * eps, as
        # ComfyUI passes it); variance-preserving schedulers want it scaled.
        return clean * _model_space_scale(scheduler, first * scheduler.order)
    starting_fresh = first == 0 and (mask is not None or not bool(clean.abs().sum()))
    if starting_fresh:  # the txt2img and inpaint pipelines start from pure noise
        return noise * scheduler.init_noise_sigma
    return scheduler.add_noise(clean, noise, timesteps[:1].repeat(clean.shape[0]))


def _model_space_scale(scheduler: Any, index: int) -> float:
    """x_model = x_sigma * scale at schedule index ``index``: 1 for k-diffusion style schedulers
    (Euler, Heun, …), 1/sqrt(1 + sigma^2) for variance-preserving ones (DDIM, DPM-Solver, UniPC)."""
    if float(scheduler.init_noise_sigma) > 1.0:
        return 1.0
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None and index < len(sigmas):
        sigma = float(sigmas[index])
    else:
        timesteps = scheduler.timesteps
        t = int(timesteps[min(index, len(timesteps) - 1)])
        alpha_bar = float(scheduler.alphas_cumprod[t])
        sigma = math.sqrt((1 - alpha_bar) / alpha_bar)
    return 1.0 / math.sqrt(1.0 + sigma * sigma)


def _step_kwargs(scheduler: Any, generators: list[torch.Generator]) -> dict[str, Any]:
    params = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "generator" in params:
        kwargs["generator"] = generators
    if "eta" in params:
        kwargs["eta"] = 0.0
    return kwargs


def _latent_mask(mask: torch.Tensor | None, shape: torch.Size, device: torch.device) -> torch.Tensor | None:
    """ComfyUI noise_mask ([B,H,W] or [B,1,H,W], pixel or latent size) -> [B,1,h,w] on device."""
    if mask is None:
        return None
    mask = mask.float()
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim == 3:
        mask = mask[:, None]
    mask = F.interpolate(mask, size=tuple(shape[-2:]), mode="bilinear", align_corners=False)
    if mask.shape[0] < shape[0]:
        mask = mask.repeat(math.ceil(shape[0] / mask.shape[0]), 1, 1, 1)[: shape[0]]
    return mask.to(device)
