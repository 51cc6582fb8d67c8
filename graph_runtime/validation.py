"""Whole-workflow validation, before anything runs.

Every problem is collected, each naming node, class_type, input, error type and message, in the
error vocabulary and JSON shape ComfyUI returns from POST /prompt, so existing clients show them.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from dataclasses import dataclass, field
from typing import Any

from graph_runtime.context import HookContext
from graph_runtime.dag import LinkGraph
from graph_runtime.formats import ApiPrompt, is_link
from graph_runtime.input_limits import InputLimits, oversized
from graph_runtime.link_checks import check_link
from graph_runtime.node import InputSpec, Node
from graph_runtime.registry import NodeRegistry
from graph_runtime.widget_values import INVALID, check_widget, short_value


@dataclass
class NodeError:
    node_id: str
    class_type: str
    type: str
    message: str
    details: str = ""
    input_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_comfy(self) -> dict[str, Any]:
        extra_info = dict(self.extra)
        if self.input_name is not None:
            extra_info["input_name"] = self.input_name
        return {"type": self.type, "message": self.message, "details": self.details,
                "extra_info": extra_info}

    def describe(self) -> str:
        where = f"node {self.node_id} ({self.class_type})"
        if self.input_name:
            where += f", input '{self.input_name}'"
        text = f"{where}: {self.message}"
        return f"{text} — {self.details}" if self.details else text


# Errors that refuse the whole prompt, whatever the other outputs (ComfyUI returns on them at once).
WHOLE_PROMPT_ERRORS = frozenset({"missing_node_type", "invalid_prompt"})


@dataclass
class ValidationResult:
    prompt: ApiPrompt
    outputs: list[str]
    node_errors: list[NodeError] = field(default_factory=list)
    # Set for whole-prompt problems (no output nodes); node errors get a summary error.
    prompt_error: dict[str, Any] | None = None
    # Constant input values after type coercion ("42" → 42 for an INT), by node id.
    constants: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The nodes the outputs depend on (outputs included), in a deterministic execution order.
    order: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.node_errors and self.prompt_error is None

    def error(self) -> dict[str, Any] | None:
        if self.prompt_error is not None:
            return self.prompt_error
        if self.node_errors:
            return comfy_error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                               "; ".join(e.describe() for e in self.node_errors[:20]))
        return None

    def runnable_outputs(self) -> list[str]:
        """The outputs that can run although others cannot: those with no error in any node they
        depend on. As ComfyUI's validate_prompt, nothing runs when the prompt itself is unreadable
        or names a node type nobody provides (``missing_node_type``), wherever that node is."""
        if self.prompt_error is not None or any(e.type in WHOLE_PROMPT_ERRORS for e in self.node_errors):
            return []
        failed = {e.node_id for e in self.node_errors}
        tainted = failed | self._graph.descendants(failed)
        return [o for o in self.outputs if o not in tainted]

    def to_comfy(self) -> dict[str, Any]:
        """ComfyUI's ``{"error": ..., "node_errors": {...}}`` body."""
        return {"error": self.error(), "node_errors": self.comfy_node_errors()}

    def comfy_node_errors(self) -> dict[str, Any]:
        grouped: dict[str, Any] = {}
        for err in self.node_errors:
            entry = grouped.setdefault(err.node_id, {"errors": [], "dependent_outputs": [],
                                                     "class_type": err.class_type})
            entry["errors"].append(err.as_comfy())
        for node_id, outputs in self._dependent_outputs(set(grouped)).items():
            grouped[node_id]["dependent_outputs"] = outputs
        return grouped

    def format(self) -> str:
        lines = []
        if self.prompt_error is not None:
            lines.append(f"{self.prompt_error['message']}: {self.prompt_error.get('details', '')}".rstrip(": "))
        count = len(self.node_errors)
        if count:
            lines.append(f"{count} error{'s' if count != 1 else ''} in the workflow:")
            lines += [f"  - {e.describe()}" for e in self.node_errors]
        return "\n".join(lines)

    @functools.cached_property
    def _graph(self) -> LinkGraph:
        return LinkGraph.of(self.prompt)

    def _dependent_outputs(self, failed: set[str]) -> dict[str, list[str]]:
        """The outputs depending on each failed node (itself included), in output order. Searched
        from the smaller side, failed nodes down or outputs up: a prompt of thousands of outputs
        and one error, or of thousands of errors and one output, takes one search."""
        found: dict[str, list[str]] = {node_id: [] for node_id in failed}
        if len(failed) <= len(self.outputs):
            for node_id in failed:
                reached = self._graph.descendants([node_id]) | {node_id}
                found[node_id] = [o for o in self.outputs if o in reached]
        else:
            for output in self.outputs:
                for node_id in (self._graph.ancestors([output]) | {output}) & failed:
                    found[node_id].append(output)
        return found


class WorkflowInvalid(Exception):
    def __init__(self, result: ValidationResult) -> None:
        super().__init__(result.format())
        self.result = result


def node_sort_key(node_id: str) -> tuple[int, float, str]:
    """Numeric ids in numeric order, then the rest ("12:34" subgraph ids) as text."""
    try:
        return (0, float(node_id), node_id)
    except ValueError:
        return (1, 0.0, node_id)


def validate(prompt: ApiPrompt, registry: NodeRegistry, *, ctx: HookContext,
             targets: list[str] | None = None, limits: InputLimits | None = None) -> ValidationResult:
    """Check a whole API-format prompt against the registry's node declarations, collecting every
    error. COMBO choices, missing-file messages and ``validate_inputs`` see ``ctx``'s folders (the
    runtime's or server's ``--base``, never the working directory). ``targets``: node ids to run
    (ComfyUI's partial execution); default every output node. ``limits``: length limits on
    identifiers and strings, checked first (a server's submissions; None: unchecked)."""
    result = ValidationResult(prompt=prompt, outputs=[])
    if not isinstance(prompt, dict):
        result.prompt_error = comfy_error("invalid_prompt", "the prompt must be an object of nodes")
        return result
    if limits is not None and _refuse_oversized(prompt, limits, result):
        return result
    known: dict[str, type[Node]] = {}
    for node_id, node in prompt.items():
        cls = _check_structure(node_id, node, registry, result)
        if cls is not None:
            known[node_id] = cls
    result.outputs = _select_outputs(prompt, known, targets, result)
    if not result.outputs:
        return result
    graph = result._graph  # built once: the error body's searches use it too
    needed = set(result.outputs) | graph.ancestors(result.outputs)
    for node_id in sorted(needed, key=node_sort_key):
        cls = known.get(node_id)
        if cls is None:
            continue
        try:
            _check_inputs(node_id, prompt[node_id]["inputs"], cls, prompt, known, result, ctx)
        except Exception as exc:  # noqa: BLE001 - a broken validator must not crash submission
            result.node_errors.append(NodeError(
                node_id, cls.__name__, "exception_during_validation",
                "Exception when validating node", f"{type(exc).__name__}: {exc}"))
    subgraph = graph.subgraph(needed)
    cycles = subgraph.cycles(node_sort_key)
    for node_id, cycle in cycles:
        path = " → ".join(cycle + cycle[:1]) if cycle else "a large group of nodes linked in a loop"
        result.node_errors.append(NodeError(
            node_id, _class_name(prompt, node_id), "bad_linked_input", "Node is part of a dependency cycle", path))
    if not cycles:
        result.order = subgraph.order(node_sort_key)
    return result


def _refuse_oversized(prompt: ApiPrompt, limits: InputLimits, result: ValidationResult) -> bool:
    """Report a prompt with too many nodes (checked first: later checks cost time per node), or
    its oversized identifiers and strings (the first hundred); whether any."""
    if len(prompt) > limits.max_nodes:
        result.prompt_error = comfy_error("invalid_prompt", f"the prompt has too many nodes: {len(prompt)}, "
                                          f"at most {limits.max_nodes}", "too_many_nodes")
        return True
    found = list(itertools.islice(oversized(prompt, limits), 100))
    for item in found:
        if item.what == "node id":  # node_errors are keyed by node id: this one cannot be a key
            result.prompt_error = comfy_error("invalid_prompt", item.message, f"node {item.node_id}")
            continue
        result.node_errors.append(NodeError(item.node_id, item.class_type, "value_too_long", item.message,
                                            item.input_name or item.what, item.input_name,
                                            {"received_length": item.length, "max_length": item.limit}))
    return bool(found)


def comfy_error(kind: str, message: str, details: Any = "") -> dict[str, Any]:
    """ComfyUI's error object ``{type, message, details, extra_info}`` (the ``error`` of its
    POST /prompt answers); ``details`` is a string, or a list of per-field problems."""
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


def _class_name(prompt: ApiPrompt, node_id: str) -> str:
    node = prompt.get(node_id)
    value = node.get("class_type") if isinstance(node, dict) else None
    return value if isinstance(value, str) else "?"


def _check_structure(node_id: str, node: Any, registry: NodeRegistry,
                     result: ValidationResult) -> type[Node] | None:
    if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
        result.node_errors.append(NodeError(node_id, "?", "invalid_prompt",
                                            "Node has no class_type", "each node needs a 'class_type' string"))
        return None
    if not isinstance(node.get("inputs", {}), dict):
        result.node_errors.append(NodeError(node_id, node["class_type"], "invalid_prompt",
                                            "Node inputs must be an object"))
        return None
    node.setdefault("inputs", {})
    cls = registry.get(node["class_type"])
    if cls is None:
        title = (node.get("_meta") or {}).get("title", node["class_type"]) if isinstance(node.get("_meta"), dict) else node["class_type"]
        result.node_errors.append(NodeError(
            node_id, node["class_type"], "missing_node_type",
            f"Node '{title}' not found. The plugin that provides {node['class_type']!r} may not be installed.",
            f"Node ID '#{node_id}'", extra={"node_id": node_id, "class_type": node["class_type"], "node_title": title}))
    return cls


def _select_outputs(prompt: ApiPrompt, known: dict[str, type[Node]], targets: list[str] | None,
                    result: ValidationResult) -> list[str]:
    if targets is not None:
        missing = [t for t in targets if t not in prompt]
        if missing:
            result.prompt_error = comfy_error("invalid_prompt", "Requested outputs are not in the prompt",
                                                ", ".join(missing))
            return []
        return sorted(set(targets), key=node_sort_key)
    outputs = sorted((n for n, cls in known.items() if cls.output_node), key=node_sort_key)
    if not outputs and not result.node_errors:
        result.prompt_error = comfy_error("prompt_no_outputs", "Prompt has no outputs",
                                            "add an output node such as SaveImage or PreviewImage")
    return outputs


def _check_inputs(node_id: str, inputs: dict[str, Any], cls: type[Node], prompt: ApiPrompt,
                  known: dict[str, type[Node]], result: ValidationResult, ctx: HookContext) -> None:
    constants: dict[str, Any] = {}
    errors_before = len(result.node_errors)

    def fail(kind: str, spec: InputSpec, message: str, details: str = "", **extra: Any) -> None:
        extra.setdefault("input_config", spec.schema(ctx))
        result.node_errors.append(NodeError(node_id, cls.__name__, kind, message, details, spec.name, extra))

    self_checked = _self_checked_inputs(cls)
    for spec in cls.inputs:
        if spec.hidden:
            continue
        if spec.name not in inputs:
            if not spec.optional:
                fail("required_input_missing", spec, "Required input is missing", f"{spec.name} ({spec.type})")
            continue
        value = inputs[spec.name]
        if isinstance(value, list) and len(value) == 2 and not (spec.is_widget and not is_link(value)):
            check_link(node_id, spec, value, prompt, known, fail)
            continue
        if not spec.is_widget:
            fail("invalid_input_type", spec, f"Input expects a link from a node producing {spec.type}",
                 f"got the constant {value!r}", received_value=short_value(value))
            continue
        if spec.name not in self_checked and (reason := spec.choices_error(ctx)):
            fail("value_not_in_list", spec, "Value not checked", reason)
            continue
        coerced = check_widget(spec, value, fail, ctx=ctx, check_choices=spec.name not in self_checked)
        if coerced is not INVALID:
            constants[spec.name] = coerced
    result.constants[node_id] = constants
    if len(result.node_errors) == errors_before:
        widget_values = {spec.name: constants[spec.name] for spec in cls.inputs if spec.name in constants}
        message = cls.validate_inputs(ctx, **widget_values)
        if message:
            result.node_errors.append(NodeError(node_id, cls.__name__, "custom_validation_failed",
                                                "Custom validation failed for node", str(message)))


@functools.cache
def _self_checked_inputs(cls: type[Node]) -> frozenset[str]:
    """Inputs the node's validate_inputs names as parameters. As in ComfyUI, their COMBO lists are
    not enforced here: the node decides (LoadImage accepts "x.png [output]" and sub-folder files
    that are not among its choices, and names the folder when one is missing)."""
    params = inspect.signature(cls.validate_inputs).parameters.values()
    return frozenset(p.name for p in params if p.name != "ctx"
                     and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY))
