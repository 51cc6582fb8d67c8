"""Collecting the diffusion family's hooks from every registered plugin (see ``hookspecs``)."""

from __future__ import annotations

from typing import Any

from nodes.diffusion.denoiser import DENOISER_HOOKS, DenoiserHooks
from nodes.diffusion.samplers import SAMPLERS, SamplerRegistry


def install_family_hooks(hook: Any, *, samplers: SamplerRegistry = SAMPLERS,
                         denoiser_hooks: DenoiserHooks = DENOISER_HOOKS) -> dict[str, str]:
    """Add each plugin's ``nodeloom_register_samplers`` and ``nodeloom_register_denoiser_hooks``
    results (``hook``: the plugin manager's hook caller). A plugin's entries are added all or
    none: one bad entry (not a factory or hook, a name another plugin holds) or a raising hook
    adds nothing of that hook's result. Returns ``{plugin name: why}`` for the plugins refused."""
    problems: dict[str, str] = {}
    for impl in _impls(hook, "nodeloom_register_samplers"):
        source = f"plugin {impl.plugin_name!r}"
        try:
            factories = dict(impl.function() or {})
        except Exception as exc:  # noqa: BLE001 - a bad plugin is reported, never fatal
            problems[impl.plugin_name] = f"nodeloom_register_samplers raised {type(exc).__name__}: {exc}"
            continue
        refused = [p for n, f in factories.items() if (p := samplers.problem(n, f, source=source))]
        if refused:
            problems[impl.plugin_name] = "nodeloom_register_samplers: " + "; ".join(refused)
            continue
        for name, factory in factories.items():
            samplers.register(name, factory, source=source)
    for impl in _impls(hook, "nodeloom_register_denoiser_hooks"):
        source = f"plugin {impl.plugin_name!r}"
        try:
            entries = list(impl.function() or [])
        except Exception as exc:  # noqa: BLE001
            problems[impl.plugin_name] = f"nodeloom_register_denoiser_hooks raised {type(exc).__name__}: {exc}"
            continue
        refused = [p for entry in entries if (p := denoiser_hooks.problem(entry, source=source))]
        if refused:
            problems[impl.plugin_name] = "nodeloom_register_denoiser_hooks: " + "; ".join(refused)
            continue
        for entry in entries:
            denoiser_hooks.register(entry, source=source)
    return problems


def _impls(hook: Any, name: str) -> list[Any]:
    caller = getattr(hook, name, None)  # absent until a plugin implements or declares it
    return caller.get_hookimpls() if caller is not None else []
