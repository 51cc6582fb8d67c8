"""Which worker takes a job: pure rules over what each worker holds, shared by pool implementations.

- Affinity: among the workers that can take it, an idle one first, then the one that was last
  given most of the job's model files, then the one with the most free slots, then the lowest
  index.
- Long-running jobs (a node class declares ``long_running``): when there is more than one worker,
  a worker holding a long job is sent nothing more (nothing waits behind it), and a long job
  starts only on an idle worker and only while another worker stays free of long jobs, so short
  jobs always have a worker. With a single worker everything runs in queue order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Slot:
    """What placement needs to know of one worker."""

    index: int
    ready: bool
    inflight: int
    holds_long: bool
    models: frozenset[str] = frozenset()


def free_slots(slot: Slot, *, prefetch: int, pool_size: int) -> int:
    if not slot.ready or (slot.holds_long and pool_size > 1):
        return 0
    return max(prefetch - slot.inflight, 0)


def choose(slots: Sequence[Slot], *, models: frozenset[str], long_running: bool, prefetch: int) -> int | None:
    """The index of the worker that takes the job, or None when none may take it now."""
    size = len(slots)
    open_slots = [s for s in slots if free_slots(s, prefetch=prefetch, pool_size=size) > 0]
    if long_running and size > 1:
        if sum(s.holds_long for s in slots) >= size - 1:
            return None
        open_slots = [s for s in open_slots if s.inflight == 0]
    if not open_slots:
        return None
    best = max(open_slots, key=lambda s: (s.inflight == 0, len(models & s.models),
                                          free_slots(s, prefetch=prefetch, pool_size=size), -s.index))
    return best.index
