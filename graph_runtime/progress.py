"""Progress of a headless run on the terminal, fed by execution events."""

from __future__ import annotations

import sys
from typing import Any

from graph_runtime.events import Event, Executing, ExecutionSuccess, Progress


class ProgressBars:
    """Two tqdm bars fed by execution events: the whole workflow (WorkflowProgress.fraction) and
    the current node's own steps."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        # Redrawn bars are noise in a log file: without a terminal, print one line per node.
        self.plain = enabled and not sys.stderr.isatty()
        self.workflow: Any = None
        self.node: Any = None

    def __enter__(self) -> ProgressBars:
        if self.enabled and not self.plain:
            from tqdm import tqdm

            self._tqdm = tqdm
            self.workflow = tqdm(total=100, desc="workflow", unit="%", position=0, leave=True,
                                 bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for bar in (self.node, self.workflow):
            if bar is not None:
                bar.close()
        self.node = self.workflow = None

    def __call__(self, event: Event) -> None:
        if self.plain and isinstance(event, Executing):
            print(f"[{event.workflow.fraction * 100:3.0f}%] node {event.node_id} {event.class_type}",
                  file=sys.stderr, flush=True)
        elif self.plain and isinstance(event, ExecutionSuccess):
            print("[100%] workflow finished", file=sys.stderr, flush=True)
        if self.workflow is None:
            return
        if isinstance(event, Executing):
            self._set_workflow(event.workflow.fraction)
            self.workflow.set_postfix_str(f"node {event.node_id} {event.class_type}", refresh=True)
            if self.node is not None:
                self.node.close()
                self.node = None
        elif isinstance(event, Progress):
            self._set_workflow(event.workflow.fraction)
            if self.node is None:
                self.node = self._tqdm(total=event.max, desc=f"node {event.node_id}", position=1, leave=False)
            self.node.total = event.max
            self.node.n = event.value
            self.node.refresh()
        elif isinstance(event, ExecutionSuccess):
            self._set_workflow(1.0)

    def _set_workflow(self, fraction: float) -> None:
        self.workflow.n = round(fraction * 100, 1)
        self.workflow.refresh()
