"""Collecting the diffusion family's hooks from every registered plugin (see ``hookspecs``)."""

from __future__ import annotations

from typing import Any

from nodes.diffusion.denoiser import DENOISER_HOOKS, DenoiserHooks
from nodes.diffusion.samplers import SAMPLERS, SamplerRegistry


def install_family_hooks(hook: Any, *, samplers: SamplerRegistry = SAMPLERS,
                         denoiser_hooks: DenoiserHooks = DENOISER_HOOKS) -> list[str]:
    """Add each plugin's ``nodeloom_register_samplers`` and ``nodeloom_register_denoiser_hooks``
    results (``hook``: the plugin manager's hook caller). Returns one message per entry that
    could not be added, naming plugin, hook and entry; the others are added."""
    problems: list[str] = []
    for impl in _impls(hook, "nodeloom_register_samplers"):
        try:
            factories = impl.function() or {}
            for name, factory in dict(factories).items():
                samplers.register(str(name), factory, source=f"plugin {impl.plugin_name!r}")
        except Exception as exc:  # noqa: BLE001 - a bad plugin is reported, never fatal
            problems.append(f"plugin {impl.plugin_name!r}, nodeloom_register_samplers: {type(exc).__name__}: {exc}")
    for impl in _impls(hook, "nodeloom_register_denoiser_hooks"):
        try:
            for entry in impl.function() or []:
                denoiser_hooks.register(entry, source=f"plugin {impl.plugin_name!r}")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"plugin {impl.plugin_name!r}, nodeloom_register_denoiser_hooks: "
                            f"{type(exc).__name__}: {exc}")
    return problems


def _impls(hook: Any, name: str) -> list[Any]:
    caller = getattr(hook, name, None)  # absent until a plugin implements or declares it
    return caller.get_hookimpls() if caller is not None else []
