"""The tiny zoo written once per session, a runtime over it, and Contexts for calling nodes."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from graph_runtime.context import Context, InterruptFlag, Services  # noqa: E402
from graph_runtime.folders import FolderPaths  # noqa: E402


@pytest.fixture(scope="session")
def zoo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nodes.diffusion.zoo import write_tiny_zoo

    root = tmp_path_factory.mktemp("upscale_zoo") / "models"
    write_tiny_zoo(root, seed=0)
    return root


@pytest.fixture(scope="session")
def folders(zoo_root: Path) -> FolderPaths:
    return FolderPaths(base=zoo_root.parent, models_roots=[zoo_root])


@pytest.fixture(scope="session")
def runtime(folders: FolderPaths):
    from graph_runtime.executor import Runtime
    from graph_runtime.registry import load_registry
    from nodes.diffusion.zoo import write_example_inputs

    write_example_inputs(folders.input_dir)
    registry = load_registry(builtins=("nodes.core", "nodes.diffusion", "nodes.upscale", "nodes.scoring"),
                             entry_points=False)
    return Runtime(registry, folders=folders)


@pytest.fixture
def make_ctx(folders: FolderPaths):
    """Contexts sharing one Services (hence one ModelManager); progress lands in ``make.events``."""
    services, events = Services(), []

    def make(node_id: str = "1") -> Context:
        return Context(prompt_id="test", node_id=node_id, class_type="test", folders=folders, services=services,
                       interrupt=InterruptFlag(), extra_data={},
                       report_progress=lambda node, value, maximum, preview, text: events.append((value, maximum)))

    make.events = events  # type: ignore[attr-defined]
    return make
