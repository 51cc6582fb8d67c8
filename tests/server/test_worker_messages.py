"""The worker pipe's message types and the run outcome shapes: every one survives the pipe's
pickling unchanged, and a failure reads back from what the queue stores."""

from __future__ import annotations

import pickle
from multiprocessing import Pipe
from pathlib import Path

import pytest

from graph_runtime.events import ExecutionError, Executing, WorkflowProgress
from graph_runtime.folders import FolderPaths
from graph_runtime.validation import ValidationResult, WorkflowInvalid
from server.execution.messages import (
    Cancel, Done, Dropped, Events, Failed, Free, Freed, Interrupt, Job, NodeSchemas, Ready, Run, SchemasReply,
    SchemasRequest, Stop, WorkerConfig, WorkerEvent,
)
from server.execution.outcome import FAILURE_KINDS, RunFailure, RunOutcome

SCHEMAS = NodeSchemas({"TestColor": {"input": {"required": {}}, "output": ["COLOR"]}},
                      {"TestModel": {"ckpt_name": "checkpoints"}}, ({"name": "p", "nodes": 1},))
JOB = Job("p1", {"1": {"class_type": "TestColor", "inputs": {}}}, {"client_id": "c"}, ("1",),
          models=frozenset({"checkpoints/a.safetensors"}), long_running=True)
NODE_ERROR = ExecutionError(prompt_id="p1", node_id="3", node_type="TestFail", executed=["1"],
                            exception_type="ValueError", exception_message="boom", traceback=["tb"],
                            current_inputs={}, current_outputs={})

MESSAGES = [
    WorkerConfig(device="cpu", folders=FolderPaths(base=Path("/srv/base")), plugin_dirs=(Path("/p"),), threads=2),
    Run(JOB), Cancel("p1"), Interrupt("p1"), Interrupt(None), SchemasRequest(7), Free(), Stop(),
    Ready(SCHEMAS), Failed("Traceback ...\nImportError: x"), Dropped("p1"), SchemasReply(7, SCHEMAS),
    WorkerEvent(Executing(prompt_id="p1", node_id="1", class_type="TestColor", display_node="1",
                          workflow=WorkflowProgress(nodes_done=0, nodes_total=1, fraction=0.0))),
    Events((Executing(prompt_id="p1", node_id="1", class_type="TestColor", display_node="1",
                      workflow=WorkflowProgress(nodes_done=0, nodes_total=1, fraction=0.0)), NODE_ERROR)),
    Done("p1", RunOutcome("success", {"2": {"images": []}}), {"loaded": []}),
    Done("p1", RunOutcome("interrupted")),
    Done("p1", RunOutcome("success"), None, {"policy": "lru", "entries": 2, "nbytes": 64}),
    Freed({"models": []}, {"policy": "lru", "entries": 0, "nbytes": 0}),
    *(Done("p1", RunFailure(kind, "E", f"{kind} failed", node_id="3", node_type="T", traceback=("a",),
                            executed=("1",), validation={"error": {}} if kind == "validation" else None))
      for kind in FAILURE_KINDS),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_the_pipe(msg: object) -> None:
    assert pickle.loads(pickle.dumps(msg)) == msg
    ours, theirs = Pipe()
    ours.send(msg)
    assert theirs.recv() == msg
    ours.close(), theirs.close()


def test_messages_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Cancel("p1").prompt_id = "p2"  # type: ignore[misc]


@pytest.mark.parametrize("kind", FAILURE_KINDS)
def test_failure_reads_back_from_its_stored_form(kind: str) -> None:
    failure = RunFailure(kind, "ValueError", "it broke", node_id="3", node_type="TestFail",  # type: ignore[arg-type]
                         traceback=("line 1", "line 2"), executed=("1", "2"),
                         validation={"error": {"type": "x"}, "node_errors": {}} if kind == "validation" else None)
    stored = failure.as_dict()
    assert stored["type"] == kind and stored["exception_message"] == "it broke" and stored["node_id"] == "3"
    assert RunFailure.from_dict(stored) == failure


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(AssertionError, match="unknown failure kind 'oops'"):
        RunFailure("oops", "E", "m")  # type: ignore[arg-type]


def test_rows_of_earlier_versions_still_read() -> None:
    old = RunFailure.from_dict({"type": "server_restart", "message": "stopped 2 time(s)"})
    assert old.kind == "server_restart" and old.exception_message == "stopped 2 time(s)"
    assert RunFailure.from_dict({}).exception_message == "the prompt failed"


def test_node_failure_keeps_node_and_exception() -> None:
    failure = RunFailure.of_node(NODE_ERROR, {"1": {"text": ["x"]}})
    assert (failure.kind, failure.node_id, failure.node_type, failure.exception_type) == ("node", "3", "TestFail",
                                                                                         "ValueError")
    assert failure.sent_as_event and failure.outputs == {"1": {"text": ["x"]}} and failure.executed == ("1",)


def test_validation_and_internal_failures() -> None:
    invalid = WorkflowInvalid(ValidationResult({}, [], prompt_error={"type": "prompt_no_outputs",
                                                                     "message": "Prompt has no outputs",
                                                                     "details": "", "extra_info": {}}))
    failure = RunFailure.of_invalid(invalid)
    assert failure.kind == "validation" and failure.validation is not None and not failure.sent_as_event
    internal = RunFailure.of_exception(KeyError("k"))
    assert internal.kind == "internal" and internal.exception_type == "KeyError" and internal.traceback


def test_job_error_has_every_field_the_editor_checks() -> None:
    error = RunFailure("worker_died", "WorkerDied", "worker process for cpu died from SIGKILL").job_error("p1")
    assert error == {"prompt_id": "p1", "node_id": "", "node_type": "", "exception_type": "WorkerDied",
                     "exception_message": "worker process for cpu died from SIGKILL", "traceback": []}
    data = RunFailure("node", "ValueError", "boom", node_id="3", node_type="T").execution_error("p1")
    assert data["node_id"] == "3" and data["current_inputs"] == {} and data["executed"] == []


def test_schemas_from_a_bad_cache_are_refused() -> None:
    assert NodeSchemas.from_dict(SCHEMAS.as_dict()) == SCHEMAS
    with pytest.raises(KeyError):
        NodeSchemas.from_dict({"object_info": {}})
    with pytest.raises(TypeError):
        NodeSchemas.from_dict({"object_info": [], "model_inputs": {}})


def test_a_validation_failure_names_the_first_node_at_fault() -> None:
    from graph_runtime.validation import NodeError

    invalid = WorkflowInvalid(ValidationResult({}, [], node_errors=[
        NodeError("4", "CheckpointLoaderSimple", "value_not_in_list", "File not found", input_name="ckpt_name"),
        NodeError("7", "SaveImage", "required_input_missing", "Required input is missing")]))
    error = RunFailure.of_invalid(invalid).job_error("p1")
    assert (error["node_id"], error["node_type"]) == ("4", "CheckpointLoaderSimple")
    assert "ckpt_name" in error["exception_message"]
