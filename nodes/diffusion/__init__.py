"""Diffusion core nodes on diffusers: loaders, text encoding, sampling, VAE, LoRA, the tiny zoo.

Registered like any plugin through ``nodeloom_register_nodes``. Node modules import torch but not
diffusers/transformers at import time, so registering the pack stays cheap.
"""

from __future__ import annotations

from graph_runtime import Node, hookimpl
from nodes import collect_nodes

MODULES: tuple[str, ...] = ("nodes_loaders", "nodes_conditioning", "nodes_latent", "nodes_sampling")


@hookimpl
def nodeloom_register_nodes() -> list[type[Node]]:
    return collect_nodes(__name__, MODULES)
