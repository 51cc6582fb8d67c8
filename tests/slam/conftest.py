"""The diffusion tests' fixtures (the tiny zoo written once per session, contexts sharing one
model manager), reused as they are."""

from tests.diffusion.conftest import _deterministic, make_ctx  # noqa: F401
