"""Contexts for calling training code directly, with progress recorded.

A plainly named module (not ``conftest``) so that tests and training subprocesses import it by a
name no other test directory uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from graph_runtime.context import Context, InterruptFlag, Services
from graph_runtime.folders import FolderPaths


@dataclass
class Reported:
    value: float
    max: float
    preview: Any
    text: str | None


@dataclass
class CtxFactory:
    folders: FolderPaths
    services: Services = field(default_factory=Services)
    events: list[Reported] = field(default_factory=list)
    interrupt: InterruptFlag = field(default_factory=InterruptFlag)

    def __call__(self, node_id: str = "1") -> Context:
        return Context(prompt_id="test", node_id=node_id, class_type="test", folders=self.folders,
                       services=self.services, interrupt=self.interrupt, extra_data={},
                       report_progress=lambda node, value, maximum, preview, text: self.events.append(
                           Reported(value, maximum, preview, text)))
