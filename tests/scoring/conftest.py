"""The upscale tests' fixtures: the tiny zoo, a runtime over it with every finishing pack, Contexts."""

from upscale.conftest import make_ctx, runtime  # noqa: F401
