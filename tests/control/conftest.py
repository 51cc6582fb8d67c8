"""The diffusion tests' contexts and helpers, shared with the control tests (the zoo: tests/conftest.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_DIFFUSION = Path(__file__).resolve().parents[1] / "diffusion"
sys.path.insert(0, str(_DIFFUSION))  # diffusion_helpers
_spec = importlib.util.spec_from_file_location("diffusion_test_fixtures", _DIFFUSION / "conftest.py")
assert _spec is not None and _spec.loader is not None
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)

make_ctx = _fixtures.make_ctx
_deterministic = _fixtures._deterministic


import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _control_hook() -> None:
    """What the pack's startup does in a runtime: the control hook joins the process's denoiser hooks."""
    from nodes.control.hook import ControlHook
    from nodes.diffusion.denoiser import DENOISER_HOOKS

    DENOISER_HOOKS.register(ControlHook(), source="plugin 'nodes.control'")
