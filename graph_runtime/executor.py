"""Executes a validated workflow: only what the outputs need, skipping cached nodes.

Each node's signature is a hash of its class, constant inputs, fingerprint and the signatures of
the nodes it links from; a node whose signature is in the output cache is not run again. Inside a
run, outputs are held until their last consumer has run, then released.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import traceback
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from graph_runtime.cache import OutputCache
from graph_runtime.context import Context, HookContext, Interrupted, InterruptFlag, Services
from graph_runtime.events import (
    EventBus, Executed, Executing, ExecutionCached, ExecutionError, ExecutionInterrupted,
    ExecutionStart, ExecutionSuccess, Listener, Preview, Progress, WorkflowProgress,
)
from graph_runtime.folders import FolderPaths
from graph_runtime.formats import ApiPrompt, is_link
from graph_runtime.node import Node
from graph_runtime.node_calls import NodeFailed, Outputs, call_mapped, describe_value, qualname
from graph_runtime.registry import NodeRegistry
from graph_runtime.validation import ValidationResult, WorkflowInvalid, node_sort_key, validate

@dataclass
class RunResult:
    prompt_id: str
    status: Literal["success", "error", "interrupted"]
    # UI payloads of output nodes (ComfyUI's history ``outputs``), by node id.
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    error: ExecutionError | None = None
    seconds: float = 0.0
    # The outputs (as lists) of the nodes asked for with ``keep``, for tests and embedding.
    values: dict[str, Outputs] = field(default_factory=dict)


class Runtime:
    """Validates and executes workflows against one registry, one set of folders, one cache and
    one set of services.

    One run at a time per Runtime (a worker process owns one); ``interrupt`` flags are per run.
    Two runtimes in one process with different ``folders`` each validate against, and name in
    their errors, their own folders.
    """

    def __init__(self, registry: NodeRegistry, *, folders: FolderPaths, cache: OutputCache | None = None,
                 services: Services | None = None) -> None:
        self.registry = registry
        self.folders = folders
        self.hook_context = HookContext(folders=folders)
        self.cache = cache if cache is not None else OutputCache()
        self.services = services or Services()
        self._lock = threading.Lock()

    def validate(self, prompt: ApiPrompt, *, targets: list[str] | None = None) -> ValidationResult:
        return validate(prompt, self.registry, ctx=self.hook_context, targets=targets)

    def resource_stats(self) -> dict[str, Any]:
        """What the plugins' long-lived resources in this runtime's services hold, merged
        (``{"model_manager": {...}}`` from the diffusion pack, say)."""
        return self.registry.resource_stats(self.services)

    def free(self, *, unload_models: bool = True, free_memory: bool = True) -> None:
        """ComfyUI's ``POST /free``: drop cached outputs and let every plugin release its
        resources (unload models, empty the GPU cache)."""
        if unload_models:
            self.cache.clear()
        self.registry.free_resources(self.services, unload_models=unload_models, free_memory=free_memory)

    def execute(self, prompt: ApiPrompt, *, prompt_id: str | None = None,
                targets: list[str] | None = None, extra_data: dict[str, Any] | None = None,
                listeners: Iterable[Listener] = (), interrupt: InterruptFlag | None = None,
                keep: Iterable[str] = ()) -> RunResult:
        """Validate, then run. Raises WorkflowInvalid (with every error) for an invalid workflow;
        node failures and interrupts end the run with an event and a RunResult, never a raise."""
        validation = self.validate(prompt, targets=targets)
        if not validation.ok:
            raise WorkflowInvalid(validation)
        with self._lock:
            run = _Run(self, validation, prompt_id or str(uuid.uuid4()), extra_data or {},
                       EventBus(list(listeners)), interrupt or InterruptFlag(), set(keep))
            return run.execute()


class _Run:
    def __init__(self, runtime: Runtime, validation: ValidationResult, prompt_id: str,
                 extra_data: dict[str, Any], bus: EventBus, interrupt: InterruptFlag,
                 keep: set[str]) -> None:
        self.runtime = runtime
        self.prompt = validation.prompt
        self.constants = validation.constants
        self.order = validation.order
        self.outputs = validation.outputs
        self.prompt_id = prompt_id
        self.extra_data = extra_data
        self.bus = bus
        self.interrupt = interrupt
        self.keep = keep
        self.classes: dict[str, type[Node]] = {
            nid: runtime.registry.nodes[self.prompt[nid]["class_type"]] for nid in self.order}
        self.results: dict[str, Outputs] = {}
        self.result = RunResult(prompt_id=prompt_id, status="success")
        self.signatures: dict[str, str] = {}
        self.done = 0
        self.total = 0
        self.current_node: str | None = None

    # -- the run -----------------------------------------------------------------------------

    def execute(self) -> RunResult:
        started = time.perf_counter()
        try:
            self._compute_signatures()
            self.runtime.cache.note_run(self.signatures.values())
            needed, cached = self._plan()
            self.total = len(needed)
            self.remaining_uses = self._count_uses(needed)
            self.bus.emit(ExecutionStart(prompt_id=self.prompt_id, nodes_total=self.total))
            self.bus.emit(ExecutionCached(prompt_id=self.prompt_id, nodes=cached))
            self._evaluate()
            self.bus.emit(ExecutionSuccess(prompt_id=self.prompt_id))
        except Interrupted:
            self.result.status = "interrupted"
            node = self.current_node
            self.bus.emit(ExecutionInterrupted(
                prompt_id=self.prompt_id, node_id=node,
                node_type=self.prompt[node]["class_type"] if node else None,
                executed=list(self.result.executed)))
        except NodeFailed as failure:
            self.result.status = "error"
            self.result.error = ExecutionError(
                prompt_id=self.prompt_id, node_id=failure.node_id, node_type=failure.class_type,
                executed=list(self.result.executed), exception_type=qualname(failure.cause),
                exception_message=str(failure.cause),
                traceback=traceback.format_exception(failure.cause),
                current_inputs={k: describe_value(v) for k, v in failure.inputs.items()},
                current_outputs={k: [describe_value(x) for x in v] for k, v in self.results.items()})
            self.bus.emit(self.result.error)
        self.result.seconds = time.perf_counter() - started
        self.result.values = {nid: self.results[nid] for nid in self.keep if nid in self.results}
        return self.result

    def _compute_signatures(self) -> None:
        for node_id in self.order:  # topological: sources before consumers
            cls = self.classes[node_id]
            constants = self.constants.get(node_id, {})
            try:
                fingerprint = cls.fingerprint(self.runtime.hook_context, **constants)
            except Exception as exc:  # noqa: BLE001 - reported as that node's failure
                raise NodeFailed(node_id, cls.__name__, exc, constants) from exc
            links = sorted((name, self.signatures[source], index)
                           for name, source, index in self._links(node_id))
            parts = [cls.__name__, sorted(constants.items()), repr(fingerprint), links]
            if cls.not_idempotent:
                parts.append(uuid.uuid4().hex)
            text = json.dumps(parts, default=repr, separators=(",", ":"))
            self.signatures[node_id] = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

    def _links(self, node_id: str) -> list[tuple[str, str, int]]:
        """``(input, source node, output index)`` of the node's linked inputs. Validation ignores
        undeclared and hidden ones, and so does the run: they may name any node, or none."""
        cls = self.classes[node_id]
        return [(name, str(value[0]), value[1]) for name, value in self.prompt[node_id]["inputs"].items()
                if is_link(value) and (spec := cls.input_spec(name)) is not None and not spec.hidden]

    def _plan(self) -> tuple[set[str], list[str]]:
        """The nodes this run needs (walking up from the outputs, stopping at cached nodes) and,
        as ComfyUI reports them, every node of the workflow whose output is cached."""
        needed: set[str] = set()
        stack = list(self.outputs)
        while stack:
            node_id = stack.pop()
            if node_id in needed:
                continue
            needed.add(node_id)
            if self.signatures[node_id] not in self.runtime.cache:
                stack.extend(source for _, source, _ in self._links(node_id))
        cached = [nid for nid in self.order if self.signatures[nid] in self.runtime.cache]
        return needed, sorted(cached, key=node_sort_key)

    def _count_uses(self, needed: set[str]) -> dict[str, int]:
        uses: dict[str, int] = {nid: 0 for nid in needed}
        for node_id in needed:
            for _, source, _ in self._links(node_id):
                if source in uses:
                    uses[source] += 1
        return uses

    def _evaluate(self) -> None:
        """Depth-first over an explicit stack (deep chains must not hit the recursion limit).
        Lazy inputs are pulled only when the node asks for them."""
        requested: dict[str, set[str]] = {}
        stack = list(reversed(self.outputs))
        while stack:
            node_id = stack[-1]
            if node_id in self.results:
                stack.pop()
                continue
            if self._load_cached(node_id):
                stack.pop()
                continue
            cls = self.classes[node_id]
            lazy = cls.lazy_input_names()
            wanted = requested.setdefault(node_id, set())
            missing = [source for name, source, _ in self._links(node_id)
                       if (name not in lazy or name in wanted) and source not in self.results]
            if missing:
                stack.extend(dict.fromkeys(reversed(missing)))
                continue
            if lazy:
                more = self._lazy_requests(node_id, cls, wanted)
                if more:
                    wanted.update(more)
                    continue
            self._run_node(node_id, cls)
            stack.pop()

    def _load_cached(self, node_id: str) -> bool:
        entry = self.runtime.cache.get(self.signatures[node_id])
        if entry is None:
            return False
        self.results[node_id] = entry.outputs
        self.result.cached.append(node_id)
        self._finish(node_id)
        if entry.ui is not None:
            self.result.outputs[node_id] = entry.ui
            self.bus.emit(Executed(prompt_id=self.prompt_id, node_id=node_id, display_node=node_id,
                                   output=entry.ui, cached=True))
        return True

    def _lazy_requests(self, node_id: str, cls: type[Node], wanted: set[str]) -> list[str]:
        inputs = self._gather_inputs(node_id, cls, lazy_pending=cls.lazy_input_names() - wanted)
        first = {name: values[0] if values else None for name, values in inputs.items()}
        asked = cls().check_lazy(self._context(node_id, cls), **first)
        links = {name for name, _, _ in self._links(node_id)}
        return [name for name in asked if name in links and name not in wanted]

    def _run_node(self, node_id: str, cls: type[Node]) -> None:
        self.current_node = node_id
        self.bus.emit(Executing(prompt_id=self.prompt_id, node_id=node_id, class_type=cls.__name__,
                                display_node=node_id, workflow=self._workflow_progress(0.0)))
        if self.interrupt.is_set():  # as ComfyUI: the node starts, then finds the interrupt
            raise Interrupted(node_id)
        # Lazy inputs the node never asked for arrive as None (their sources did not run).
        inputs = self._gather_inputs(node_id, cls, lazy_pending=cls.lazy_input_names())
        ctx = self._context(node_id, cls)
        try:
            outputs, ui = call_mapped(cls(), ctx, inputs, cls)
        except Interrupted:
            raise
        except Exception as exc:  # noqa: BLE001 - any node failure ends the run with an event
            raise NodeFailed(node_id, cls.__name__, exc, inputs) from exc
        self.results[node_id] = outputs
        self.result.executed.append(node_id)
        self.runtime.cache.put(self.signatures[node_id], outputs, ui)
        if ui is not None:
            self.result.outputs[node_id] = ui
            self.bus.emit(Executed(prompt_id=self.prompt_id, node_id=node_id, display_node=node_id, output=ui))
        self._finish(node_id)

    def _finish(self, node_id: str) -> None:
        self.done += 1
        for _, source, _ in self._links(node_id):
            uses = self.remaining_uses.get(source)
            if uses is None:
                continue
            self.remaining_uses[source] = uses - 1
            if uses - 1 <= 0 and source not in self.keep and source not in self.outputs:
                self.results.pop(source, None)  # last consumer done: let the memory go

    def _gather_inputs(self, node_id: str, cls: type[Node], *, lazy_pending: frozenset[str] | set[str]) -> dict[str, list[Any]]:
        raw = self.prompt[node_id]["inputs"]
        constants = self.constants.get(node_id, {})
        gathered: dict[str, list[Any]] = {}
        for spec in cls.inputs:
            if spec.hidden:
                gathered[spec.name] = [self._hidden_value(spec.type, node_id)]
            elif spec.name in constants:
                gathered[spec.name] = [constants[spec.name]]
            elif is_link(raw.get(spec.name)):
                source, index = str(raw[spec.name][0]), raw[spec.name][1]
                if spec.name in lazy_pending and source not in self.results:
                    gathered[spec.name] = [None]
                else:
                    gathered[spec.name] = self.results[source][index]
            else:
                gathered[spec.name] = [None]
        return gathered

    def _hidden_value(self, kind: str, node_id: str) -> Any:
        if kind == "UNIQUE_ID":
            return node_id
        if kind == "EXTRA_PNGINFO":
            return self.extra_data.get("extra_pnginfo")
        return self.prompt

    def _context(self, node_id: str, cls: type[Node]) -> Context:
        return Context(prompt_id=self.prompt_id, node_id=node_id, class_type=cls.__name__,
                       folders=self.runtime.folders, services=self.runtime.services,
                       interrupt=self.interrupt, report_progress=self._report_progress,
                       extra_data=self.extra_data)

    def _report_progress(self, node_id: str, value: float, maximum: float,
                         preview: Preview | None, text: str | None) -> None:
        fraction = min(max(value / maximum, 0.0), 1.0) if maximum else 0.0
        self.bus.emit(Progress(prompt_id=self.prompt_id, node_id=node_id, value=value, max=maximum,
                               workflow=self._workflow_progress(fraction), preview=preview, text=text))

    def _workflow_progress(self, node_fraction: float) -> WorkflowProgress:
        total = max(self.total, 1)
        return WorkflowProgress(nodes_done=self.done, nodes_total=self.total,
                                fraction=min((self.done + node_fraction) / total, 1.0))
