"""A runtime over the tiny zoo with the evaluation pack and those it builds on, and Contexts."""

from __future__ import annotations

from pathlib import Path

import pytest

from graph_runtime.context import Context, InterruptFlag, Services
from graph_runtime.folders import FolderPaths


@pytest.fixture(scope="session")
def eval_folders(zoo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> FolderPaths:
    """The zoo's models plus a models root of these tests' own (``models_roots[1]``, for the
    folders they add), and a base folder whose input/ holds the example inputs."""
    from nodes.diffusion.zoo import write_example_inputs

    base = tmp_path_factory.mktemp("eval")
    folders = FolderPaths(base=base, models_roots=[zoo_root, base / "models"])
    write_example_inputs(folders.input_dir)
    return folders


@pytest.fixture(scope="session")
def eval_runtime(eval_folders: FolderPaths):
    from graph_runtime.executor import Runtime
    from graph_runtime.registry import load_registry

    registry = load_registry(builtins=("nodes.core", "nodes.diffusion", "nodes.scoring", "nodes.evaluation"),
                             entry_points=False)
    return Runtime(registry, folders=eval_folders)


@pytest.fixture(scope="session")
def make_ctx(eval_folders: FolderPaths):
    """Contexts over ``eval_folders`` sharing one Services (hence one ModelManager)."""
    services = Services()

    def make(node_id: str = "1") -> Context:
        return Context(prompt_id="test", node_id=node_id, class_type="test", folders=eval_folders,
                       services=services, interrupt=InterruptFlag(), extra_data={},
                       report_progress=lambda *_: None)

    return make


@pytest.fixture(scope="session")
def own_models(eval_folders: FolderPaths) -> Path:
    """The models root these tests write into (the zoo stays as every other test sees it)."""
    return eval_folders.models_roots[1]
