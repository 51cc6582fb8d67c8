"""Fixtures every test directory shares: the tiny zoo, written once per session, and its folders.

Tests run offline: the hub is never asked, and the bundled CLIP tokenizer is built into a cache
folder of the session instead of the user's ~/.cache.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("NODELOOM_CACHE_DIR", tempfile.mkdtemp(prefix="nodeloom-test-cache-"))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

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
