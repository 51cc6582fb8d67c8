"""Run core-node graphs through the real runtime, against folders under tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from graph_runtime import FolderPaths, NodeRegistry, RunResult, Runtime, load_registry


@pytest.fixture(scope="session")
def core_registry() -> NodeRegistry:
    registry = load_registry(builtins=("nodes.core",), plugin_dirs=[], entry_points=False)
    failed = [p.as_dict() for p in registry.plugins if p.status != "loaded"]
    assert not failed, failed
    return registry


class Graphs:
    """A runtime over fresh folders, and helpers to feed it images and read node outputs."""

    def __init__(self, registry: NodeRegistry, folders: FolderPaths) -> None:
        self.folders = folders
        self.runtime = Runtime(registry, folders=folders)

    def put_image(self, name: str, picture: Image.Image | np.ndarray, **save: Any) -> str:
        """Write an image into the input folder, as an upload would; returns the LoadImage value."""
        if isinstance(picture, np.ndarray):
            picture = Image.fromarray(picture)
        assert self.folders.input_dir is not None
        path = self.folders.input_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(path, **save)
        return name

    def run(self, prompt: dict[str, Any], **kwargs: Any) -> RunResult:
        result = self.runtime.execute(prompt, **kwargs)
        assert result.status == "success", result.error
        return result

    def output(self, prompt: dict[str, Any], node_id: str, index: int = 0) -> Any:
        """The first item of one output of ``node_id``, running only what it needs."""
        result = self.run(prompt, targets=[node_id], keep=[node_id])
        return result.values[node_id][index][0]

    def load(self, picture: Image.Image | np.ndarray, node_id: str = "src") -> dict[str, Any]:
        """A prompt fragment: a LoadImage node reading ``picture``."""
        name = self.put_image(f"{node_id}.png", picture)
        return {node_id: {"class_type": "LoadImage", "inputs": {"image": name}}}


@pytest.fixture
def graphs(core_registry: NodeRegistry, tmp_path: Path) -> Graphs:
    folders = FolderPaths(base=tmp_path)
    assert folders.input_dir is not None
    folders.input_dir.mkdir(parents=True)
    return Graphs(core_registry, folders)

