"""Where a job goes: affinity by model files, and long-running jobs kept off the worker that short
jobs need."""

from __future__ import annotations

from server.execution.placement import Slot, choose, free_slots

MODEL = frozenset({"checkpoints/a.safetensors"})


def _slots(*inflight: int, long: tuple[int, ...] = (), models: dict[int, frozenset[str]] | None = None) -> list[Slot]:
    return [Slot(i, True, n, i in long, (models or {}).get(i, frozenset())) for i, n in enumerate(inflight)]


def test_idle_worker_first_then_lowest_index() -> None:
    assert choose(_slots(1, 0), models=frozenset(), long_running=False, prefetch=2) == 1
    assert choose(_slots(0, 0), models=frozenset(), long_running=False, prefetch=2) == 0


def test_worker_holding_the_models_wins_among_idle_ones() -> None:
    assert choose(_slots(0, 0, models={1: MODEL}), models=MODEL, long_running=False, prefetch=2) == 1


def test_full_or_starting_workers_take_nothing() -> None:
    assert choose(_slots(2, 2), models=frozenset(), long_running=False, prefetch=2) is None
    starting = [Slot(0, False, 0, False)]
    assert choose(starting, models=frozenset(), long_running=False, prefetch=2) is None


def test_short_jobs_never_queue_behind_a_long_one_when_another_worker_exists() -> None:
    slots = _slots(1, 1, long=(0,))
    assert free_slots(slots[0], prefetch=2, pool_size=2) == 0
    assert choose(slots, models=frozenset(), long_running=False, prefetch=2) == 1


def test_a_long_job_leaves_one_worker_free_of_long_jobs() -> None:
    assert choose(_slots(0, 0), models=frozenset(), long_running=True, prefetch=2) == 0
    # One worker runs a long job: a second long job waits, the other worker stays for short ones.
    assert choose(_slots(1, 0, long=(0,)), models=frozenset(), long_running=True, prefetch=2) is None
    # A long job starts only on an idle worker, never behind a short one.
    assert choose(_slots(1, 1), models=frozenset(), long_running=True, prefetch=2) is None
    assert choose(_slots(1, 1, 0, long=(0,)), models=frozenset(), long_running=True, prefetch=2) == 2


def test_one_worker_runs_everything_in_order() -> None:
    assert choose(_slots(0), models=frozenset(), long_running=True, prefetch=2) == 0
    slots = _slots(1, long=(0,))
    assert choose(slots, models=frozenset(), long_running=False, prefetch=2) == 0
    assert choose(slots, models=frozenset(), long_running=True, prefetch=2) == 0
