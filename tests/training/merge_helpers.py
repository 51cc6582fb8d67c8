"""Contexts and loaders for the merge and checkpoint tests (one ModelManager per test)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from graph_runtime.context import Context, InterruptFlag, Services
from graph_runtime.folders import FolderPaths
from nodes.diffusion.nodes_loaders import CheckpointLoaderSimple
from nodes.infra.model_manager import manager_from


@pytest.fixture
def make_ctx(folders: FolderPaths):
    """Contexts sharing one Services (hence one ModelManager) per test."""
    services = Services()
    torch.manual_seed(0)

    def make(node_id: str = "1", base_folders: FolderPaths | None = None) -> Context:
        return Context(prompt_id="test", node_id=node_id, class_type="test", folders=base_folders or folders,
                       services=services, interrupt=InterruptFlag(), report_progress=lambda *_: None, extra_data={})

    return make


def load(ctx: Context, ckpt: str) -> tuple[Any, Any, Any]:
    return CheckpointLoaderSimple().run(ctx, ckpt_name=ckpt)


def weights(ctx: Context, model: Any) -> dict[str, torch.Tensor]:
    """The UNet's weights as the MODEL samples with them (patches applied), copied."""
    with model.use(manager_from(ctx.services)) as unet:
        return {k: v.detach().clone() for k, v in unet.state_dict().items()}
