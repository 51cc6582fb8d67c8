"""The upscale tests' fixtures: the tiny zoo, a runtime over it with every finishing pack, Contexts."""

from upscale.conftest import folders, make_ctx, runtime, zoo_root  # noqa: F401
