"""Per-test folders and contexts for the training tests (the contexts: :mod:`training_ctx`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from graph_runtime.folders import FolderPaths
from tests.training.training_ctx import CtxFactory


@pytest.fixture
def run_folders(tmp_path: Path, zoo_root: Path) -> FolderPaths:
    """The shared tiny zoo as models, with input/, output/ and a first models root (where trained
    LoRAs go) of this test's own."""
    return FolderPaths(base=tmp_path, models_roots=[tmp_path / "models", zoo_root])


@pytest.fixture
def make_ctx(run_folders: FolderPaths) -> CtxFactory:
    return CtxFactory(run_folders)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # The tiny models' calls are too small to share between threads; on busy cores a second
    # thread slows them several times over. Module scope: set before module-scoped training fixtures.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
