"""Node hooks see the folders of their run through a HookContext, never a process-wide global: two
runtimes with different bases in one process each validate against, and name, their own folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import graph_runtime.folders
from graph_runtime import (
    FolderPaths, HookContext, Node, NodeRegistry, Output, Runtime, String, WorkflowInvalid,
)
from graph_runtime.schema import node_schema, object_info

from . import toynodes


class FolderProbe(Node):
    """Records the folders its hooks were given."""

    category = "test"
    inputs = [String("name", "x")]
    outputs = [Output("STRING")]
    seen: list[tuple[str, Path]] = []

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        cls.seen.append(("validate_inputs", ctx.folders.base))
        return None

    @classmethod
    def fingerprint(cls, ctx: HookContext, **widgets: Any) -> Any:
        cls.seen.append(("fingerprint", ctx.folders.base))
        return None

    def run(self, ctx: Any, *, name: str) -> tuple[str]:
        return (name,)


def runtime_at(base: Path, registry: NodeRegistry, models: list[str]) -> Runtime:
    folders = FolderPaths(base=base)
    checkpoints = folders.models_roots[0] / "checkpoints"
    checkpoints.mkdir(parents=True)
    for name in models:
        (checkpoints / name).write_bytes(b"")
    return Runtime(registry, folders=folders)


@pytest.fixture
def two(tmp_path: Path, registry: NodeRegistry) -> tuple[Runtime, Runtime]:
    registry.add_node(FolderProbe)
    return (runtime_at(tmp_path / "one", registry, ["one.safetensors"]),
            runtime_at(tmp_path / "two", registry, ["two.safetensors", "zwei.safetensors"]))


def missing_checkpoint(name: str) -> dict[str, Any]:
    return {"1": {"class_type": "Checkpoint", "inputs": {"ckpt_name": name}},
            "2": {"class_type": "Collect", "inputs": {"value": ["1", 0]}}}


def test_the_process_wide_folder_global_is_gone() -> None:
    assert not hasattr(graph_runtime.folders, "configure")
    assert not hasattr(graph_runtime.folders, "current")


def test_each_runtime_names_its_own_folder_for_a_missing_model(two: tuple[Runtime, Runtime]) -> None:
    one, other = two
    for runtime, present in ((one, "one.safetensors"), (other, "two.safetensors")):
        (error,) = runtime.validate(missing_checkpoint("absent.safetensors")).node_errors
        folder = runtime.folders.models_roots[0] / "checkpoints"
        assert error.type == "value_not_in_list" and str(folder) in error.details
        assert present in error.details
        elsewhere = (other if runtime is one else one).folders.base
        assert str(elsewhere) not in error.details


def test_each_runtime_accepts_only_its_own_files(two: tuple[Runtime, Runtime]) -> None:
    one, other = two
    assert one.validate(missing_checkpoint("one.safetensors")).ok
    assert not other.validate(missing_checkpoint("one.safetensors")).ok
    assert other.validate(missing_checkpoint("zwei.safetensors")).ok
    with pytest.raises(WorkflowInvalid, match="two.safetensors"):
        other.execute(missing_checkpoint("one.safetensors"))


def test_model_file_combo_lists_each_runtime_files(two: tuple[Runtime, Runtime]) -> None:
    one, other = two
    spec = toynodes.Checkpoint.input_spec("ckpt_name")
    assert spec is not None
    assert spec.current_choices(one.hook_context) == ["one.safetensors"]
    assert spec.current_choices(other.hook_context) == ["two.safetensors", "zwei.safetensors"]
    schema = node_schema(toynodes.Checkpoint, other.hook_context)
    assert schema["input"]["required"]["ckpt_name"][0] == ["two.safetensors", "zwei.safetensors"]
    assert object_info(one.registry, one.hook_context)["Checkpoint"]["input"]["required"]["ckpt_name"][0] == [
        "one.safetensors"]


def test_validate_inputs_and_fingerprint_get_the_runs_folders(two: tuple[Runtime, Runtime]) -> None:
    FolderProbe.seen.clear()
    prompt = {"1": {"class_type": "FolderProbe", "inputs": {"name": "a"}},
              "2": {"class_type": "Collect", "inputs": {"value": ["1", 0]}}}
    for runtime in two:
        assert runtime.execute(prompt).status == "success"
    one, other = (runtime.folders.base for runtime in two)
    assert FolderProbe.seen == [("validate_inputs", one), ("fingerprint", one),
                                ("validate_inputs", other), ("fingerprint", other)]


def test_runtime_requires_its_folders(registry: NodeRegistry) -> None:
    with pytest.raises(TypeError, match="folders"):
        Runtime(registry)  # type: ignore[call-arg]
