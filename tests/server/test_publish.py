"""Publishing a worker's saved files into a batch's shared folder: no name is overwritten."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.execution.outcome import RunFailure, RunOutcome
from server.execution.publish import Publisher, join


def staged(staging: Path, name: str, data: bytes, subfolder: str = "") -> dict[str, str]:
    (staging / subfolder).mkdir(parents=True, exist_ok=True)
    (staging / subfolder / name).write_bytes(data)
    return {"filename": name, "subfolder": subfolder, "type": "output"}


@pytest.mark.parametrize("as_url", [False, True])
def test_two_workers_publishing_one_counter_name_keep_both_files(tmp_path: Path, as_url: bool) -> None:
    target = tmp_path / "shared"
    where = f"file://{target}" if as_url else target
    first, second = Publisher(tmp_path / "a", where), Publisher(tmp_path / "b", where)
    one = RunOutcome("success", {"9": {"images": [staged(tmp_path / "a", "cat_00001_.png", b"one", "pets")]}})
    two = RunOutcome("success", {"9": {"images": [staged(tmp_path / "b", "cat_00001_.png", b"two", "pets")]}})
    names = [p.publish(r).outputs["9"]["images"][0]["filename"] for p, r in ((first, one), (second, two))]
    assert names == ["cat_00001_.png", "cat_00002_.png"]
    assert (target / "pets" / "cat_00001_.png").read_bytes() == b"one"
    assert (target / "pets" / "cat_00002_.png").read_bytes() == b"two"
    assert not any((tmp_path / "a").rglob("*.png")), "staged files are removed once published"
    assert first.location({"filename": "x.png", "subfolder": "pets"}) == join(where, "pets", "x.png")


def test_previews_and_failures_keep_their_entries(tmp_path: Path) -> None:
    publisher = Publisher(tmp_path / "stage", tmp_path / "shared")
    preview = {"filename": "p.png", "subfolder": "", "type": "temp"}
    saved = staged(tmp_path / "stage", "made_00001_.png", b"x")
    failed = RunFailure("node", "ValueError", "boom", node_id="3", outputs={"2": {"images": [preview, saved]}})
    published = publisher.publish(failed)
    assert isinstance(published, RunFailure) and published.exception_message == "boom"
    assert published.outputs["2"]["images"] == [preview, saved]
    assert (tmp_path / "shared" / "made_00001_.png").read_bytes() == b"x"


def test_an_unwritable_target_fails_the_run_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "shared"
    publisher = Publisher(tmp_path / "stage", blocker)
    blocker.rmdir()
    blocker.write_text("a file where the folder should be")
    result = publisher.publish(RunOutcome("success", {"1": {"images": [staged(tmp_path / "stage", "a_00001_.png", b"")]}}))
    assert isinstance(result, RunFailure) and result.kind == "internal"
    assert f"publishing outputs to {blocker}" in result.exception_message


def test_an_unknown_url_protocol_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nosuchfs://bucket"):
        Publisher(tmp_path, "nosuchfs://bucket/renders")
