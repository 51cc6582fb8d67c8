"""The one place the denoising network is called while sampling, and what plugs into it.

Per step, :class:`Denoiser` turns the scheduler's model input into a noise prediction:

- the **guidance strategy** decides how many predictions a step takes and how they combine
  (:class:`ClassifierFreeGuidance` on [negative, positive]; :class:`NoGuidance`, one pass, when
  cfg <= 1, when the sampler asks for it, or for UNets with guidance embedded in ``timestep_cond``);
- the **per-model extras** come from the family data and the UNet config (SDXL's pooled text
  embeds and size/crop time ids; LCM-style ``timestep_cond`` from the guidance scale embedding);
- an **inpainting UNet** (9 input channels) gets the mask and masked-image latents appended to
  its input (``inpaint``), after the hooks, which see the 4-channel latents;
- **denoiser hooks** see each call (:class:`UNetCall`) and may add ControlNet/T2I-Adapter
  residuals or more ``added_cond_kwargs`` (:class:`UNetInputs`); several hooks' residuals add up.

With one prompt per side and no areas, a step is exactly the StableDiffusion(XL) pipelines' UNet
call (same batch order, same guidance formula), which the equivalence tests check.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from nodes.diffusion.families import DEFAULT_FAMILY, FamilySpec
from nodes.diffusion.guidance import Guidance, ModelExtras
from nodes.diffusion.inpaint import InpaintInputs, concat_for
from nodes.diffusion.models import Conditioning
Tensor = torch.Tensor


@dataclass(frozen=True)
class UNetCall:
    """One call of the denoising network, as hooks see it. Rows of ``sample`` come in chunks of
    ``batch``, one chunk per conditioning entry (``conditioning[i]`` holds the extras dict of
    chunk ``i``: with CFG, chunk 0 is the negative and chunk 1 the positive prompt).
    ``region`` is the (y, x, h, w) latent area of an area-conditioned call, else None."""

    sample: Tensor  # [N, C, h, w], already scaled by the scheduler
    timestep: Tensor
    encoder_hidden_states: Tensor  # [N, T, D]
    conditioning: tuple[Mapping[str, Any], ...]
    batch: int
    step: int  # 0-based index in the run
    steps: int
    unet_config: Mapping[str, Any]
    region: tuple[int, int, int, int] | None = None
    # What the UNet gets besides text: SDXL's text_embeds/time_ids, LCM-style timestep_cond
    # (a ControlNet copied from the UNet needs the same).
    added_cond_kwargs: Mapping[str, Tensor] | None = None
    timestep_cond: Tensor | None = None


@dataclass
class UNetInputs:
    """What a hook adds to a UNet call (diffusers' UNet2DConditionModel argument names)."""

    down_block_additional_residuals: tuple[Tensor, ...] | None = None
    mid_block_additional_residual: Tensor | None = None
    down_intrablock_additional_residuals: tuple[Tensor, ...] | None = None
    added_cond_kwargs: dict[str, Tensor] = field(default_factory=dict)

    def merge(self, other: UNetInputs) -> UNetInputs:
        """Residuals add up (as stacked ControlNets do); added_cond_kwargs must not collide."""
        clash = set(self.added_cond_kwargs) & set(other.added_cond_kwargs)
        assert not clash, f"two denoiser hooks set the same added_cond_kwargs: {sorted(clash)}"
        return UNetInputs(_add_all(self.down_block_additional_residuals, other.down_block_additional_residuals),
                          _add(self.mid_block_additional_residual, other.mid_block_additional_residual),
                          _add_all(self.down_intrablock_additional_residuals, other.down_intrablock_additional_residuals),
                          {**self.added_cond_kwargs, **other.added_cond_kwargs})

    def apply(self, kwargs: dict[str, Any]) -> None:
        for name in ("down_block_additional_residuals", "mid_block_additional_residual",
                     "down_intrablock_additional_residuals"):
            value = getattr(self, name)
            if value is not None:
                # The UNet pops T2I-Adapter features off a list as it goes down: give it its own.
                kwargs[name] = list(value) if name == "down_intrablock_additional_residuals" else value
        if self.added_cond_kwargs:
            kwargs["added_cond_kwargs"] = {**(kwargs.get("added_cond_kwargs") or {}), **self.added_cond_kwargs}


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    return b if a is None else a if b is None else a + b


def _add_all(a: tuple[Tensor, ...] | None, b: tuple[Tensor, ...] | None) -> tuple[Tensor, ...] | None:
    if a is None or b is None:
        return b if a is None else a
    assert len(a) == len(b), f"residual lists of different lengths: {len(a)} and {len(b)}"
    return tuple(x + y for x, y in zip(a, b))


@runtime_checkable
class DenoiserHook(Protocol):
    """Called before every UNet call of every sampling run; returns what to add, or None."""

    name: str

    def __call__(self, call: UNetCall) -> UNetInputs | None: ...


class DenoiserHooks:
    """The process's hooks, in registration order (plugins add theirs at startup)."""

    def __init__(self) -> None:
        self._hooks: list[DenoiserHook] = []
        self.origin: dict[str, str] = {}

    def problem(self, hook: object, *, source: str) -> str | None:
        """Why ``hook`` cannot be registered for ``source`` (None when it can)."""
        if not isinstance(hook, DenoiserHook):
            return (f"denoiser hook from {source}: {hook!r} is not a DenoiserHook "
                    f"(needs a name and __call__(call) -> UNetInputs | None)")
        if hook.name in self.origin and self.origin[hook.name] != source:
            return f"denoiser hook {hook.name!r} from {source} is already registered by {self.origin[hook.name]}"
        return None

    def register(self, hook: DenoiserHook, *, source: str) -> None:
        """Raises ValueError for an object that is not a hook or a name another hook holds."""
        if (problem := self.problem(hook, source=source)) is not None:
            raise ValueError(problem)
        # A plugin registering again (another registry in the process) replaces its own hook.
        self._hooks = [h for h in self._hooks if h.name != hook.name] + [hook]
        self.origin[hook.name] = source

    def __iter__(self) -> Iterator[DenoiserHook]:
        return iter(list(self._hooks))


DENOISER_HOOKS = DenoiserHooks()



class Denoiser:
    """Noise prediction for one sampling run over ComfyUI conditioning lists. One entry per side
    without an area is the pipelines' case: a single UNet call on [negative, positive]. Several
    entries (ConditioningCombine) or areas (ConditioningSetArea) are predicted one by one and
    averaged by strength over the region each covers."""

    def __init__(self, unet: torch.nn.Module, spec: FamilySpec, *, positive: Conditioning, negative: Conditioning,
                 guidance: Guidance, extras: ModelExtras, batch: int, steps: int,
                 hooks: Sequence[DenoiserHook] = (), inpaint: InpaintInputs | None = None) -> None:
        self.unet = unet
        self.inpaint = inpaint
        self.spec = spec
        self.positive = positive
        self.negative = negative
        self.guidance = guidance
        self.extras = extras
        self.batch = batch
        self.steps = steps
        self.hooks = list(hooks)
        self.unet_config: Mapping[str, Any] = dict(getattr(unet, "config", {}))
        _check_text_width(self.unet_config, positive=positive, negative=negative)
        self.simple = all(len(c) == 1 and _plain(c[0][1]) for c in (positive, negative))
        self.copies = 2 if (guidance.uses_negative and self.simple) else 1

    def __call__(self, model_in: Tensor, t: Tensor, step: int) -> Tensor:
        """``model_in``: [copies * B, C, h, w] scaled input -> [B, C, h, w] guided prediction."""
        uses_negative = self.guidance.uses_negative
        if self.simple:
            sides = [self.negative[0], self.positive[0]] if uses_negative else [self.positive[0]]
            eps = self.predict(model_in, t, sides, step)
            if not uses_negative:
                return self.guidance.combine(eps, None)
            uncond, cond = eps.chunk(2)
            return self.guidance.combine(cond, uncond)
        cond = self._combined(self.positive, model_in, t, step)
        uncond = self._combined(self.negative, model_in, t, step) if uses_negative else None
        return self.guidance.combine(cond, uncond)

    def predict(self, sample: Tensor, t: Tensor, entries: Sequence[list[Any]], step: int,
                region: tuple[int, int, int, int] | None = None) -> Tensor:
        """The UNet call: ``sample`` rows in chunks of ``batch``, one per conditioning entry."""
        dtype, device = sample.dtype, sample.device
        context = self._context(entries, dtype, device)
        kwargs: dict[str, Any] = {"encoder_hidden_states": context,
                                  "added_cond_kwargs": self.extras.added_cond(entries, self.batch, dtype, device)}
        timestep_cond = self.extras.timestep_cond(sample.shape[0], dtype, device)
        if timestep_cond is not None:
            kwargs["timestep_cond"] = timestep_cond
        if self.hooks:
            call = UNetCall(sample=sample, timestep=t, encoder_hidden_states=context,
                            conditioning=tuple(e[1] for e in entries), batch=self.batch, step=step,
                            steps=self.steps, unet_config=self.unet_config, region=region,
                            added_cond_kwargs=kwargs["added_cond_kwargs"], timestep_cond=timestep_cond)
            self._run_hooks(call, step).apply(kwargs)
        if self.inpaint is not None:
            sample = torch.cat([sample, concat_for(self.inpaint, entries, self.batch, region, dtype, device)], dim=1)
        return self.unet(sample, t, **kwargs, return_dict=False)[0]

    def _run_hooks(self, call: UNetCall, step: int) -> UNetInputs:
        """Every hook's contribution to this call, merged. Raises RuntimeError naming the hook and
        its plugin when one fails (the user otherwise sees only KSampler fail)."""
        added = UNetInputs()
        for hook in self.hooks:
            try:
                contribution = hook(call)
            except Exception as exc:
                origin = DENOISER_HOOKS.origin.get(hook.name, "an unregistered source")
                raise RuntimeError(f"denoiser hook {hook.name!r} from {origin} failed at step "
                                   f"{step}: {type(exc).__name__}: {exc}") from exc
            if contribution is not None:
                added = added.merge(contribution)
        return added

    def _context(self, entries: Sequence[list[Any]], dtype: torch.dtype, device: torch.device) -> Tensor:
        target = math.lcm(*(e[0].shape[1] for e in entries))
        # Repeating a context along the tokens leaves cross-attention unchanged (every key is
        # duplicated as often), which is how prompts of different lengths share one batch.
        contexts = [e[0].repeat(1, target // e[0].shape[1], 1).repeat(self.batch, 1, 1) for e in entries]
        return torch.cat(contexts).to(device, dtype)

    def _combined(self, entries: Conditioning, model_in: Tensor, t: Tensor, step: int) -> Tensor:
        total = torch.zeros_like(model_in)
        weight = torch.zeros_like(model_in[:, :1])
        for entry in entries:
            cells = DEFAULT_FAMILY.vae_scale_factor // self.spec.vae_scale_factor
            y, x, h, w = _area(entry[1], model_in.shape, cells)
            strength = float(entry[1].get("strength", 1.0))
            region = model_in[:, :, y:y + h, x:x + w]
            eps = self.predict(region, t, [entry], step, region=(y, x, h, w))
            total[:, :, y:y + h, x:x + w] += eps * strength
            weight[:, :, y:y + h, x:x + w] += strength
        return total / weight.clamp_min(1e-8)


def _check_text_width(unet_config: Mapping[str, Any], **sides: Conditioning) -> None:
    """Refuse conditioning from another model's text encoder before cross-attention fails on it in
    matrix terms (SD's CLIP into the pixel family's UNet, SD1.5's into SDXL's). Raises ValueError
    naming the side, both widths and what to wire instead."""
    width = unet_config.get("cross_attention_dim")
    if unet_config.get("encoder_hid_dim") and unet_config.get("encoder_hid_dim_type") in (None, "text_proj"):
        width = unet_config["encoder_hid_dim"]  # the UNet projects the text itself (diffusers' text_proj)
    if not isinstance(width, int):
        return  # per-block widths or no config: the UNet itself is the judge
    for name, entries in sides.items():
        for embeds, _ in entries:
            if embeds.shape[-1] != width:
                raise ValueError(f"{name}: the conditioning is {embeds.shape[-1]} wide, this model's UNet takes "
                                 f"{width} (text encoded with another model's CLIP? encode with the CLIP of the "
                                 f"checkpoint the model comes from)")


def _plain(extras: Mapping[str, Any]) -> bool:
    return "area" not in extras and float(extras.get("strength", 1.0)) == 1.0


def _area(extras: Mapping[str, Any], shape: torch.Size, cells: int = 1) -> tuple[int, int, int, int]:
    """(y, x, h, w) in latent cells; ComfyUI stores area as (h, w, y, x) in SD's 8-pixel cells,
    ``cells`` of this model's latents each (4 for the pixel family's 2-pixel cells)."""
    if "area" not in extras:
        return 0, 0, int(shape[-2]), int(shape[-1])
    h, w, y, x = (int(v) * cells for v in extras["area"])
    y, x = min(y, shape[-2] - 1), min(x, shape[-1] - 1)
    return y, x, max(1, min(h, shape[-2] - y)), max(1, min(w, shape[-1] - x))
