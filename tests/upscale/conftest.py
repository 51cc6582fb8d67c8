"""A runtime over the tiny zoo (tests/conftest.py) with every finishing pack, and Contexts."""

from __future__ import annotations

import pytest

from graph_runtime.context import Context, InterruptFlag, Services
from graph_runtime.folders import FolderPaths


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
