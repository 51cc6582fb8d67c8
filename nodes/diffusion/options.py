"""The diffusion pack's command line: the model manager options shared by ``run``, ``batch`` and
``serve`` (``--device``, ``--ram-budget``, ``--vram-budget``, ``--channels-last``, ``--compile``),
the settings the nodes read from them, and the ``nodeloom models`` subcommand.

Imported to build the parser, so it imports neither torch nor diffusers; ``models`` imports its
writer only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Mapping
from typing import Any

from graph_runtime import hookimpl

# The settings keys the model manager reads (``ctx.services.get("settings")``), one per option.
SETTINGS_KEYS: tuple[str, ...] = ("device", "ram_budget", "vram_budget", "channels_last", "compile")
# The module holding ``main(argv)`` of ``nodeloom models`` (it imports torch).
MODELS_COMMAND_MODULE = "nodes.diffusion.zoo"


@hookimpl
def nodeloom_add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="execution device, e.g. cpu or cuda:0 (default: cuda if present)")
    parser.add_argument("--ram-budget", metavar="SIZE", help="RAM for loaded models, e.g. 8GB (default: unbounded)")
    parser.add_argument("--vram-budget", metavar="SIZE", help="GPU memory for loaded models, e.g. 6GB")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format for UNet/VAE")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (slow first run)")


@hookimpl
def nodeloom_settings(options: Mapping[str, Any]) -> dict[str, Any] | None:
    """``{device, ram_budget, vram_budget, channels_last, compile}`` from the parsed options;
    None for a command that has none of them."""
    if not any(key in options for key in SETTINGS_KEYS):
        return None
    return {key: options.get(key) for key in SETTINGS_KEYS}


@hookimpl
def nodeloom_add_commands(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    # Its own parser reads the arguments (``models tiny --root DIR``): they pass through as is.
    models = subparsers.add_parser("models", add_help=False,
                                   help="write the tiny random-weight model zoo (models tiny)")
    models.set_defaults(handler=run_models_command, passthrough=True)


def run_models_command(args: argparse.Namespace) -> int:
    """``nodeloom models …``: hand the arguments to the model utilities' own parser."""
    try:
        module = importlib.import_module(MODELS_COMMAND_MODULE)
    except ImportError as exc:
        print(f"nodeloom models: not available ({exc})", file=sys.stderr)
        return 1
    return int(module.main(list(args.arguments)) or 0)
