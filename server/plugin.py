"""The server's plugin: adds the ``nodeloom serve`` command through the runtime's CLI hooks, and the
``ray`` batch executor.

Importing it (to build the command line) loads neither the app nor uvicorn: ``server.cli`` only
declares the options; the app is built when ``serve`` runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from graph_runtime import hookimpl


@hookimpl
def nodeloom_add_commands(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    from server.cli import DESCRIPTION, add_serve_arguments, serve

    parser = subparsers.add_parser("serve", parents=parents, description=DESCRIPTION,
                                   help="start the ComfyUI-compatible HTTP and websocket server")
    add_serve_arguments(parser)
    parser.set_defaults(handler=serve)


@hookimpl
def nodeloom_batch_executors() -> dict[str, Any]:
    """``nodeloom batch --executor ray``: the batch's items on Ray actors (docs/ray.md)."""
    from server.execution.pool_batch import ray_batch

    return {"ray": ray_batch}
