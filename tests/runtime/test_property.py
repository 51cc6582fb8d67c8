"""Random, mostly invalid workflows: validation only ever answers with structured errors, and an
invalid workflow never runs a node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graph_runtime import FolderPaths, HookContext, NodeRegistry, OutputCache, Runtime, WorkflowInvalid, validate
from graph_runtime.validation import ValidationResult

from . import toynodes

REGISTRY = NodeRegistry()
# No node of these prompts reads files; the folders only have to exist as a value.
FOLDERS = FolderPaths(base=Path("/nonexistent-nodeloom-base"))
for _cls in toynodes.NODES:
    if _cls is not toynodes.FileStamp:  # its fingerprint reads a real file
        REGISTRY.add_node(_cls)
CLASS_NAMES = sorted(REGISTRY.nodes) + ["Unknown", ""]
INPUT_NAMES = sorted({spec.name for cls in REGISTRY.nodes.values() for spec in cls.inputs}) + ["bogus"]
IDS = [str(i) for i in range(6)]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3000, 3000), st.floats(allow_nan=True),
                    st.text(max_size=6), st.sampled_from(["first", "second", "fourth", "true"]))
links = st.lists(st.one_of(st.sampled_from(IDS + ["99"]), st.integers(0, 9), st.booleans(), st.none()),
                 min_size=0, max_size=3) | st.tuples(st.sampled_from(IDS), st.integers(-1, 3)).map(list)
values = st.one_of(scalars, links, st.dictionaries(st.text(max_size=3), scalars, max_size=2))
nodes = st.one_of(
    st.fixed_dictionaries({"class_type": st.sampled_from(CLASS_NAMES),
                           "inputs": st.dictionaries(st.sampled_from(INPUT_NAMES), values, max_size=4)}),
    st.fixed_dictionaries({"class_type": st.one_of(st.none(), st.integers())}),
    st.fixed_dictionaries({"class_type": st.sampled_from(CLASS_NAMES), "inputs": st.lists(scalars, max_size=2)}),
    scalars,
)
prompts = st.dictionaries(st.sampled_from(IDS), nodes, max_size=6)


def assert_structured(result: ValidationResult) -> None:
    body = json.loads(json.dumps(result.to_comfy(), default=str))
    assert set(body) == {"error", "node_errors"}
    for node_id, entry in body["node_errors"].items():
        assert node_id in result.prompt
        assert {"errors", "dependent_outputs", "class_type"} <= set(entry)
        for error in entry["errors"]:
            assert {"type", "message", "details", "extra_info"} <= set(error)
    if not result.ok:
        assert body["error"] is not None and result.format()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompts)
def test_validation_only_returns_structured_errors_and_invalid_never_runs(prompt: dict[str, Any]) -> None:
    result = validate(json.loads(json.dumps(prompt)), REGISTRY, ctx=HookContext(FOLDERS))
    assert_structured(result)
    toynodes.CALLS.clear()
    runtime = Runtime(REGISTRY, folders=FOLDERS, cache=OutputCache())
    try:
        run = runtime.execute(prompt)
    except WorkflowInvalid as exc:
        assert not result.ok
        assert toynodes.CALLS == []
        assert_structured(exc.result)
    else:
        assert result.ok
        assert run.status in ("success", "error", "interrupted")
