"""Example NodeLoom plugin: a PALETTE link type and two nodes that use it.

A plugin is a package in the plugins folder (or a distribution exposing the ``nodeloom.plugins``
entry point) whose hook functions return its link types and node classes. This one extracts the
dominant colours of an IMAGE as a PALETTE, and renders a PALETTE back as an IMAGE swatch.
"""

from __future__ import annotations

from graph_runtime import Node, hookimpl

from .palette import PALETTE, ExtractPalette, PaletteSwatch


@hookimpl
def nodeloom_register_types() -> dict[str, str]:
    return {PALETTE: "dominant colours of an image: RGB in 0..1, each with its share of the pixels"}


@hookimpl
def nodeloom_register_nodes() -> list[type[Node]]:
    return [ExtractPalette, PaletteSwatch]
