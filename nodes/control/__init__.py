"""ControlNet and T2I-Adapter: loaders, apply nodes, inpaint control images, soft-edge annotators, composite.

The residuals reach the UNet through the diffusion pack's denoiser-hook seam
(``nodeloom_register_denoiser_hooks``), so they act inside every sampler built on
``nodes.diffusion.sampling.sample``. See docs/controlnet.md.
"""

from __future__ import annotations

from typing import Any

from graph_runtime import Node, hookimpl
from nodes import collect_nodes

MODULES: tuple[str, ...] = ("nodes_loaders", "nodes_apply", "softedge", "composite")


@hookimpl
def nodeloom_register_nodes() -> list[type[Node]]:
    return collect_nodes(__name__, MODULES)


@hookimpl
def nodeloom_register_denoiser_hooks() -> list[Any]:
    from nodes.control.hook import ControlHook

    return [ControlHook()]
