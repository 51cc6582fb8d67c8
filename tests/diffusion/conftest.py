"""Contexts for calling nodes directly (the tiny zoo and its folders come from tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from graph_runtime.context import Context, InterruptFlag, Services
from graph_runtime.folders import FolderPaths


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
