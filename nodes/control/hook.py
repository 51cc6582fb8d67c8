"""The denoiser hook that turns the conditioning's ControlNets and T2I-Adapters into UNet inputs.

Registered through ``nodeloom_register_denoiser_hooks``, so it acts inside every sampler built on
``nodes.diffusion.sampling.sample`` (KSampler, KSamplerAdvanced, and any plugin sampler). At each
UNet call it reads the ``"control"`` chain of every conditioning chunk, runs each application that
is inside its step window on that chunk's rows, and returns the summed residuals. Chunks whose
entries carry no ControlNet (the negative after the legacy ControlNetApply) get none. With CFG and
the same chain on both sides this is exactly the diffusers ControlNet pipelines' call: the
ControlNet sees the whole [negative, positive] batch, its residuals scaled by
``controlnet_conditioning_scale``, and MultiControlNet's residuals add up.
"""

from __future__ import annotations

from typing import Any

import torch

from nodes.control.models import ControlApplication, chain_of, fit_hint
from nodes.diffusion.denoiser import UNetCall, UNetInputs

Tensor = torch.Tensor
# SD1.x and SDXL latents are 1/8 of the image; ControlNets and T2I-Adapters take pixels.
PIXELS_PER_LATENT = 8


class ControlHook:
    """DenoiserHook: ControlNet/T2I-Adapter residuals from the conditioning's control chains."""

    name = "controlnet"

    def __call__(self, call: UNetCall) -> UNetInputs | None:
        groups: dict[tuple[int, ...], tuple[tuple[ControlApplication, ...], list[int]]] = {}
        for chunk, extras in enumerate(call.conditioning):
            chain = tuple(a for a in chain_of(extras) if a.active(call.step, call.steps) and a.strength != 0)
            if chain:
                key = tuple(id(a) for a in chain)
                groups.setdefault(key, (chain, []))[1].append(chunk)
        if not groups:
            return None
        total = UNetInputs()
        rows_all = call.sample.shape[0]
        for chain, chunks in groups.values():
            rows = torch.cat([torch.arange(c * call.batch, (c + 1) * call.batch) for c in chunks])
            whole = len(rows) == rows_all
            for application in chain:
                part = _residuals(application, call, None if whole else rows)
                total = total.merge(part if whole else _scatter(part, rows, rows_all))
        return total


def _take(value: Any, rows: Tensor | None) -> Any:
    if rows is None or value is None:
        return value
    if isinstance(value, dict):
        return {k: v[rows.to(v.device)] for k, v in value.items()}
    return value[rows.to(value.device)]


def _residuals(application: ControlApplication, call: UNetCall, rows: Tensor | None) -> UNetInputs:
    """One application's contribution for the selected rows (all rows when ``rows`` is None)."""
    sample = _take(call.sample, rows)
    height, width = (s * PIXELS_PER_LATENT for s in sample.shape[-2:])
    model = application.model
    expected = call.unet_config.get("cross_attention_dim")
    if model.cross_attention_dim is not None and expected is not None and model.cross_attention_dim != expected:
        raise ValueError(f"ControlNet {model.name!r} was made for a UNet with cross_attention_dim "
                         f"{model.cross_attention_dim}, but the model has {expected} (an SD1.5 ControlNet on "
                         f"an SDXL model or the other way round?)")
    with application.manager.use(model.ref) as (net,):
        param = next(net.parameters())
        hint = fit_hint(application.image, height, width, sample.shape[0]).to(param.device, param.dtype)
        if model.kind == "t2i_adapter":
            _check_adapter_scale(model.name, net.config, call.unet_config)
            if net.config.get("in_channels") == 1:
                hint = hint.mean(dim=1, keepdim=True)  # sketch adapters see one channel (ComfyUI's mean)
            features = net(hint)
            return UNetInputs(down_intrablock_additional_residuals=tuple(f * application.strength for f in features))
        kwargs: dict[str, Any] = {}
        if net.config.get("addition_embed_type") == "text_time":
            if not call.added_cond_kwargs:
                raise ValueError(f"ControlNet {model.name!r} is an SDXL ControlNet; the model is not SDXL")
            kwargs["added_cond_kwargs"] = _take(dict(call.added_cond_kwargs), rows)
        if net.config.get("time_cond_proj_dim") is not None and call.timestep_cond is not None:
            kwargs["timestep_cond"] = _take(call.timestep_cond, rows)
        text = _take(call.encoder_hidden_states, rows).to(param.dtype)
        down, mid = net(sample.to(param.dtype), call.timestep, encoder_hidden_states=text, controlnet_cond=hint,
                        conditioning_scale=application.strength, return_dict=False, **kwargs)
        return UNetInputs(down_block_additional_residuals=tuple(down), mid_block_additional_residual=mid)


def _check_adapter_scale(name: str, adapter: Any, unet: Any) -> None:
    """The adapter's first feature must land where the UNet adds it: inside a cross-attention first
    block at latent size (1/8, SD1.x), after a plain first block's downsampler (1/16, SDXL)."""
    first = (unet.get("down_block_types") or ["CrossAttnDownBlock2D"])[0]
    expected = PIXELS_PER_LATENT if first.startswith("CrossAttn") else 2 * PIXELS_PER_LATENT
    factor = adapter.get("downscale_factor", expected)
    if factor != expected:
        raise ValueError(f"T2I-Adapter {name!r} makes features at 1/{factor} of the image but this model takes "
                         f"them at 1/{expected} (an SD1.5 adapter on an SDXL model or the other way round?)")


def _scatter(part: UNetInputs, rows: Tensor, total_rows: int) -> UNetInputs:
    """Residuals for a subset of rows, placed into zeros for the whole batch."""
    def place(t: Tensor) -> Tensor:
        full = t.new_zeros((total_rows, *t.shape[1:]))
        full[rows.to(t.device)] = t
        return full

    def place_all(ts: tuple[Tensor, ...] | None) -> tuple[Tensor, ...] | None:
        return None if ts is None else tuple(place(t) for t in ts)

    return UNetInputs(place_all(part.down_block_additional_residuals),
                      None if part.mid_block_additional_residual is None else place(part.mid_block_additional_residual),
                      place_all(part.down_intrablock_additional_residuals))
