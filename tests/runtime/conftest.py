from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from graph_runtime import FolderPaths, HookContext, NodeRegistry, OutputCache, Runtime

from . import comfy_like, toynodes


@pytest.fixture(autouse=True)
def _clear_calls() -> Iterator[None]:
    toynodes.CALLS.clear()
    yield
    toynodes.CALLS.clear()


@pytest.fixture
def folders(tmp_path: Path) -> FolderPaths:
    """A fresh base folder."""
    return FolderPaths(base=tmp_path)


@pytest.fixture
def hook_context(folders: FolderPaths) -> HookContext:
    """What validation and UI-format conversion list computed choices from."""
    return HookContext(folders=folders)


@pytest.fixture
def registry() -> NodeRegistry:
    registry = NodeRegistry()
    for cls in toynodes.NODES:
        registry.add_node(cls, plugin="toynodes")
    return registry


@pytest.fixture
def ui_registry() -> NodeRegistry:
    registry = NodeRegistry()
    for cls in comfy_like.NODES:
        registry.add_node(cls, plugin="comfy_like")
    return registry


@pytest.fixture
def runtime(registry: NodeRegistry, folders: FolderPaths) -> Runtime:
    return Runtime(registry, cache=OutputCache(), folders=folders)


@pytest.fixture
def calls() -> list[str]:
    return toynodes.CALLS
