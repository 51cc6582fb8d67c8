"""Diffusion core nodes on diffusers: loaders, text encoding, sampling, VAE, LoRA, the tiny zoo.

Registered like any plugin through ``nodeloom_register_nodes``. Node modules import torch but not
diffusers/transformers at import time, so registering the pack stays cheap.

The pack defines the diffusion family's own hooks (``hookspecs``: samplers and denoiser hooks) and
collects every plugin's implementations at startup into the process's sampler registry and
denoiser hooks. Shared torch infrastructure (model manager, file reading, tiling) lives in
``nodes.infra``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from graph_runtime import Node, Services, hookimpl
from nodes import collect_nodes
from nodes.diffusion import hookspecs
from nodes.diffusion.options import nodeloom_add_commands, nodeloom_add_options, nodeloom_settings  # noqa: F401

if TYPE_CHECKING:
    import pluggy

    from graph_runtime.registry import NodeRegistry

log = logging.getLogger(__name__)

MODULES: tuple[str, ...] = ("nodes_loaders", "nodes_conditioning", "nodes_latent", "nodes_sampling", "nodes_model")


@hookimpl
def nodeloom_register_nodes() -> list[type[Node]]:
    return collect_nodes(__name__, MODULES)


@hookimpl
def nodeloom_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def nodeloom_startup(config: Mapping[str, Any], registry: NodeRegistry) -> None:
    """Collect the plugins' samplers and denoiser hooks. A plugin whose entries are refused keeps
    its nodes; the reason is recorded on it (``nodeloom plugins``, /system_stats) and logged."""
    del config
    from nodes.diffusion.plugins import install_family_hooks

    for plugin_name, why in install_family_hooks(registry.hook).items():
        for record in registry.plugins:
            if record.name == plugin_name:
                record.error = f"startup failed: {why}"
        log.warning("plugin %s: %s", plugin_name, why)


@hookimpl
def nodeloom_resource_stats(services: Services) -> dict[str, Any] | None:
    """The model manager's report (the nodes create it on first use)."""
    manager = services.get("model_manager")
    return {"model_manager": manager.stats()} if manager is not None else None


@hookimpl
def nodeloom_free_resources(services: Services, unload_models: bool, free_memory: bool) -> None:
    manager = services.get("model_manager")
    if manager is not None:
        manager.free(unload_models=unload_models)
    torch = sys.modules.get("torch")
    if free_memory and torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
