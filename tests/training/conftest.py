"""Contexts for calling training code directly, with progress recorded, on per-test folders."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from graph_runtime.context import Context, InterruptFlag, Services
from graph_runtime.folders import FolderPaths


@dataclass
class Reported:
    value: float
    max: float
    preview: Any
    text: str | None


@dataclass
class CtxFactory:
    folders: FolderPaths
    services: Services = field(default_factory=Services)
    events: list[Reported] = field(default_factory=list)
    interrupt: InterruptFlag = field(default_factory=InterruptFlag)

    def __call__(self, node_id: str = "1") -> Context:
        return Context(prompt_id="test", node_id=node_id, class_type="test", folders=self.folders,
                       services=self.services, interrupt=self.interrupt, extra_data={},
                       report_progress=lambda node, value, maximum, preview, text: self.events.append(
                           Reported(value, maximum, preview, text)))


@pytest.fixture
def run_folders(tmp_path: Path, zoo_root: Path) -> FolderPaths:
    """The shared tiny zoo as models, with input/, output/ and a first models root (where trained
    LoRAs go) of this test's own."""
    return FolderPaths(base=tmp_path, models_roots=[tmp_path / "models", zoo_root])


@pytest.fixture
def make_ctx(run_folders: FolderPaths) -> CtxFactory:
    return CtxFactory(run_folders)
