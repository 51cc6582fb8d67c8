"""Shared fixtures: the tiny zoo written once per session, and a Context for calling nodes."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from graph_runtime.context import Context, InterruptFlag, Services  # noqa: E402
from graph_runtime.folders import FolderPaths  # noqa: E402


@pytest.fixture(scope="session")
def zoo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nodes.diffusion.zoo import write_tiny_zoo

    root = tmp_path_factory.mktemp("zoo") / "models"
    write_tiny_zoo(root, seed=0)
    return root


@pytest.fixture(scope="session")
def folders(zoo_root: Path) -> FolderPaths:
    return FolderPaths(base=zoo_root.parent, models_roots=[zoo_root])


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, float, float, Any]] = []

    def __call__(self, node_id: str, value: float, maximum: float, preview: Any, text: Any) -> None:
        self.events.append((node_id, value, maximum, preview))


@pytest.fixture
def make_ctx(folders: FolderPaths):
    """Contexts sharing one Services (hence one ModelManager) per test."""
    services = Services()
    recorder = Recorder()

    def make(node_id: str = "1") -> Context:
        return Context(prompt_id="test", node_id=node_id, class_type="test", folders=folders, services=services,
                       interrupt=InterruptFlag(), report_progress=recorder, extra_data={})

    make.services = services  # type: ignore[attr-defined]
    make.recorder = recorder  # type: ignore[attr-defined]
    return make


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
