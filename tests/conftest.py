"""Fixtures every test directory shares: the tiny zoo, written once per session, and its folders.

Tests run offline: the hub is never asked, and the bundled CLIP tokenizer is built into a cache
folder of the session instead of the user's ~/.cache.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import types

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
if "NODELOOM_CACHE_DIR" not in os.environ:
    os.environ["NODELOOM_CACHE_DIR"] = tempfile.mkdtemp(prefix="nodeloom-test-cache-")
    atexit.register(shutil.rmtree, os.environ["NODELOOM_CACHE_DIR"], True)

from pathlib import Path  # noqa: E402

# This folder is a namespace package (``from tests.server.conftest import ...``). A regular
# top-level ``tests`` package that a dependency's wheel installs (torch-fidelity ships one) would
# win over a namespace package wherever it sits on sys.path, so name this folder explicitly.
_tests = types.ModuleType("tests")
_tests.__path__ = [str(Path(__file__).parent)]
sys.modules["tests"] = _tests

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
