"""The diffusion tests' fixtures (the tiny zoo written once per session, contexts sharing one
model manager), reused as they are."""

from tests.diffusion.conftest import _deterministic, folders, make_ctx, zoo_root  # noqa: F401
