"""SaveImage writing off the run's thread: names reserved at once (never twice, whichever thread
or process writes), a file visible under its name only once complete, the same bytes as an
in-place save."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from graph_runtime import FolderPaths, Runtime
from graph_runtime.context import Services
from graph_runtime.deferred import BACKGROUND_WRITES, BackgroundWrites, PendingWrite
from nodes.core import imaging
from nodes.core.imaging import PARTIAL_SUFFIX, reserve_name, write_png


def save_prompt(color: int, prefix: str = "shot"):
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 12, "batch_size": 2, "color": color}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}}}


@pytest.fixture
def gated_writes(monkeypatch):
    """Every PNG write waits for ``gate``; ``pending`` collects the submitted writes."""
    gate = threading.Event()
    pending: list[PendingWrite] = []
    real = imaging.write_png

    def slow_write(*args, **kwargs):
        assert gate.wait(20), "the test never opened the gate"
        real(*args, **kwargs)

    monkeypatch.setattr(imaging, "write_png", slow_write)
    writes = BackgroundWrites(threads=1, on_submit=pending.append)
    yield writes, gate, pending
    gate.set()
    writes.close()


def test_background_save_returns_before_the_file_exists_and_writes_the_same_bytes(core_registry, tmp_path,
                                                                                  gated_writes):
    writes, gate, pending = gated_writes
    background = Runtime(core_registry, folders=FolderPaths(base=tmp_path / "bg"),
                         services=Services(**{BACKGROUND_WRITES: writes}))
    first = background.execute(save_prompt(0x102030), prompt_id="p1")
    second = background.execute(save_prompt(0x405060), prompt_id="p2")  # runs while the first writes
    assert first.status == second.status == "success"
    names = [[i["filename"] for i in r.outputs["2"]["images"]] for r in (first, second)]
    assert names == [["shot_00001_.png", "shot_00002_.png"], ["shot_00003_.png", "shot_00004_.png"]]
    out = tmp_path / "bg" / "output"
    # nothing under a final name yet: only the reservations, which the second run counted
    assert sorted(p.name for p in out.iterdir()) == sorted(n + PARTIAL_SUFFIX for batch in names for n in batch)
    assert [(p.prompt_id, p.node_id, p.class_type) for p in pending] == [("p1", "2", "SaveImage")] * 2 + \
        [("p2", "2", "SaveImage")] * 2
    gate.set()
    for write in pending:
        write.future.result(timeout=20)
    assert sorted(p.name for p in out.iterdir()) == [n for batch in names for n in batch]

    # the very bytes an in-place save writes (pixels and the workflow chunk)
    in_place = Runtime(core_registry, folders=FolderPaths(base=tmp_path / "plain"))
    in_place.execute(save_prompt(0x102030), prompt_id="p1")
    for name in names[0]:
        assert (out / name).read_bytes() == (tmp_path / "plain" / "output" / name).read_bytes()


def test_reservations_from_many_threads_never_collide(tmp_path):
    def reserve_ten(_: int) -> list[str]:
        return [reserve_name(tmp_path, "race", 1)[0].name for _ in range(10)]

    with ThreadPoolExecutor(8) as pool:
        names = [name for batch in pool.map(reserve_ten, range(8)) for name in batch]
    assert len(set(names)) == 80
    assert sorted(names) == [f"race_{n:05}_.png" for n in range(1, 81)]


def test_a_name_finished_by_another_writer_is_skipped(tmp_path):
    (tmp_path / "shot_00003_.png").write_bytes(b"done")  # written since the folder was listed
    path, counter = reserve_name(tmp_path, "shot", 3)
    assert (path.name, counter) == ("shot_00004_.png", 4)
    assert not (tmp_path / ("shot_00003_.png" + PARTIAL_SUFFIX)).exists()
    assert (tmp_path / "shot_00003_.png").read_bytes() == b"done"


def test_a_failed_write_leaves_no_file_and_raises(tmp_path, monkeypatch):
    path, _ = reserve_name(tmp_path, "shot", 1)

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_png(Image.new("RGB", (4, 4)), path, imaging.png_metadata({}, None), 4)
    assert list(tmp_path.iterdir()) == []
