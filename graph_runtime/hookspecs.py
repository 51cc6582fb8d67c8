"""Plugin hook specifications. Built-in node packs and the server register through these too.

A plugin is a module (or package) that defines functions named like the specs below, decorated
with ``graph_runtime.hookimpl`` (a ``nodeloom_*`` function without it fails its plugin: pluggy
would ignore it). It is found through the ``nodeloom.plugins`` entry-point group or
as a package in the plugins folder. Hooks are called with keyword arguments; an implementation may
accept any subset of a spec's arguments. An implementation whose name matches no spec (a typo,
say) fails its plugin with an error naming the plugin, the hook and the nearest spec.

A family of plugins can define hooks of its own (the diffusion pack's sampler and denoiser hooks)
through ``nodeloom_addhooks``, as pytest plugins do with ``pytest_addhooks``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from graph_runtime.context import Services
    from graph_runtime.node import Node
    from graph_runtime.registry import NodeRegistry

PROJECT = "nodeloom"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(historic=True)
def nodeloom_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    """Add hook specifications of this plugin's own (``pluginmanager.add_hookspecs(module)``), so
    that other plugins can implement them. Called when the plugin is registered; implementations
    of those hooks registered earlier in the same load are matched to them afterwards."""


@hookspec
def nodeloom_register_nodes() -> list[type[Node]]:  # type: ignore[empty-body]
    """Return the node classes this plugin provides. Class names are the ``class_type`` used in
    workflows and must be unique across plugins; a clash skips the later plugin's node."""


@hookspec
def nodeloom_register_types() -> dict[str, str]:  # type: ignore[empty-body]
    """Return the link types this plugin introduces, as ``{TYPE_NAME: description}``. Every link
    type a node declares must be a core type or registered here."""


@hookspec
def nodeloom_startup(config: Mapping[str, Any], registry: NodeRegistry) -> None:
    """Called once per process after every plugin is registered (``config``: the runtime's
    settings, read-only; ``registry``: the loaded nodes, types and plugin manager). Set up
    long-lived resources lazily rather than here when possible."""


@hookspec
def nodeloom_add_options(parser: argparse.ArgumentParser) -> None:
    """Add command-line options shared by the commands that execute workflows (``run``,
    ``batch``, ``serve``), e.g. the diffusion pack's ``--device`` and ``--vram-budget``."""


@hookspec
def nodeloom_settings(options: Mapping[str, Any]) -> dict[str, Any] | None:  # type: ignore[empty-body]
    """Turn the parsed options (``vars(args)``) into the settings this plugin's nodes read from
    ``ctx.services.get("settings")``. The results of all plugins are merged; one that raises is
    recorded on its plugin and left out."""


@hookspec
def nodeloom_add_commands(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``nodeloom`` subcommands (``subparsers.add_parser(name, parents=parents, …)`` with
    ``set_defaults(handler=callable(args) -> int)``; a command without one, or whose handler
    raises, exits 1 naming the command and this plugin). ``parents`` carry the shared options; the
    handler finds the loaded plugins as ``args.registry``. A command that reads its arguments with
    a parser of its own sets ``passthrough=True`` too and gets them untouched as
    ``args.arguments``."""


@hookspec
def nodeloom_resource_stats(services: Services) -> dict[str, Any] | None:  # type: ignore[empty-body]
    """What this plugin's long-lived resources in ``services`` hold (loaded models, bytes), for
    ``/system_stats``; ``{name: value}`` merged across plugins (one that raises is left out).
    Call it through ``NodeRegistry.resource_stats``, which isolates each plugin's failure."""


@hookspec
def nodeloom_free_resources(services: Services, unload_models: bool, free_memory: bool) -> None:
    """Release this plugin's long-lived resources in ``services`` (``POST /free``). Call it
    through ``NodeRegistry.free_resources``: one plugin raising does not stop the others."""


@hookspec
def nodeloom_batch_executors() -> dict[str, Any]:  # type: ignore[empty-body]
    """Executors ``nodeloom batch --executor NAME`` may use besides the in-process ``local`` one,
    as ``{name: factory}``; ``factory(args, env)`` (the parsed options and the command's
    ``graph_runtime.headless.Env``) returns a ``graph_runtime.batch.BatchExecutor`` or raises
    ``ValueError`` with a message for the user (a missing optional dependency: how to install
    it). The server plugin adds ``ray``."""


@hookspec
def nodeloom_model_paths() -> dict[str, str]:  # type: ignore[empty-body]
    """Model folders a plugin bundles, as ``{name: path of a ComfyUI extra_model_paths.yaml}``
    (the demo pack's trained demo models). Every command and the server add their folders after the
    user's own models roots and ``--extra-model-paths``, so a user's file of the same name wins."""


@hookspec
def nodeloom_warmup(services: Services) -> None:
    """Pay first-use costs (lazy imports, first kernel calls, encoder set-up) once, in a worker
    process before it reports ready, so its first prompt runs as fast as the next. Must be quick
    (well under a second), touch no files and load no model weights."""
