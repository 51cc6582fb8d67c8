"""Diffusion core nodes on diffusers: loaders, text encoding, sampling, VAE, LoRA, the tiny zoo.

Registered like any plugin through ``nodeloom_register_nodes``. Node modules import torch but not
diffusers/transformers at import time, so registering the pack stays cheap.
"""

from __future__ import annotations

import sys
from typing import Any

from graph_runtime import Node, Services, hookimpl
from nodes import collect_nodes
from nodes.diffusion.options import nodeloom_add_commands, nodeloom_add_options, nodeloom_settings  # noqa: F401

MODULES: tuple[str, ...] = ("nodes_loaders", "nodes_conditioning", "nodes_latent", "nodes_sampling")


@hookimpl
def nodeloom_register_nodes() -> list[type[Node]]:
    return collect_nodes(__name__, MODULES)


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
