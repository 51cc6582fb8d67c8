"""NodeLoom's graph runtime: workflow formats, the node API, validation, cached execution, events
and plugins. It never imports torch; nodes that need it live in node packs, which are plugins."""

from graph_runtime.cache import OutputCache
from graph_runtime.context import Context, HookContext, Interrupted, InterruptFlag, Services
from graph_runtime.events import Preview
from graph_runtime.executor import RunResult, Runtime
from graph_runtime.folders import FolderPaths
from graph_runtime.formats import Workflow, parse_workflow
from graph_runtime.hookspecs import hookimpl
from graph_runtime.node import (
    Boolean, Combo, Float, Hidden, InputSpec, Int, Link, ModelFile, Node, Output, Result, String,
)
from graph_runtime.registry import NodeRegistry, load_plugins, load_registry
from graph_runtime.validation import ValidationResult, WorkflowInvalid, validate

__all__ = [
    "Boolean", "Combo", "Context", "Float", "FolderPaths", "Hidden", "HookContext", "InputSpec", "Int",
    "InterruptFlag", "Interrupted", "Link", "ModelFile", "Node", "NodeRegistry", "Output",
    "OutputCache", "Preview", "Result", "RunResult", "Runtime", "Services", "String",
    "ValidationResult", "Workflow", "WorkflowInvalid", "hookimpl", "load_plugins", "load_registry",
    "parse_workflow", "validate",
]
