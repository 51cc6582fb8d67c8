"""Hooks of the diffusion family, added to the plugin manager by ``nodes.diffusion``'s
``nodeloom_addhooks``. Implement them in any plugin with ``graph_runtime.hookimpl``; they are
collected once, at startup, after every plugin is registered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graph_runtime.hookspecs import hookspec

if TYPE_CHECKING:
    from nodes.diffusion.denoiser import DenoiserHook
    from nodes.diffusion.samplers import SamplerFactory


@hookspec
def nodeloom_register_samplers() -> dict[str, SamplerFactory]:  # type: ignore[empty-body]
    """Return samplers as ``{sampler_name: factory}``; each name joins KSampler's and
    KSamplerAdvanced's ``sampler_name`` choices (a name already taken fails the plugin's startup).
    ``nodes.diffusion.samplers.DiffusersSampler`` covers a diffusers scheduler with options."""


@hookspec
def nodeloom_register_denoiser_hooks() -> list[DenoiserHook]:  # type: ignore[empty-body]
    """Return denoiser hooks, called before every UNet call of every sampling run to add inputs
    (ControlNet/T2I-Adapter residuals, extra ``added_cond_kwargs``); see
    ``nodes.diffusion.denoiser.DenoiserHook``. A hook that has nothing to add returns None."""
