"""The bounded output cache: node outputs by signature, evicted least-recently-used.

ComfyUI users' most common complaint is memory growth from its output cache; this one is bounded
by entry count and by an estimate of the bytes it holds (tensors counted by their storage size,
each storage once).
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

CachePolicy = Literal["lru", "none"]
# What an output cache keeps once its owner goes idle: the last run's outputs, or all it holds.
IdleKeep = Literal["last-prompt", "all"]
IDLE_KEEP: tuple[IdleKeep, ...] = ("last-prompt", "all")


@dataclass(frozen=True)
class CacheEntry:
    outputs: tuple[list[Any], ...]
    ui: dict[str, Any] | None
    nbytes: int


@dataclass(frozen=True)
class CacheStats:
    entries: int
    nbytes: int
    hits: int
    misses: int
    evictions: int


class OutputCache:
    """LRU cache of node outputs keyed by signature.

    ``policy="lru"`` keeps at most ``max_entries`` entries and ``max_bytes`` estimated bytes;
    ``policy="none"`` keeps nothing between runs (every run recomputes everything).
    """

    def __init__(self, *, policy: CachePolicy = "lru", max_entries: int = 1024,
                 max_bytes: int = 4 << 30) -> None:
        assert policy in ("lru", "none"), f"cache policy must be 'lru' or 'none', got {policy!r}"
        assert max_entries > 0 and max_bytes > 0, "cache bounds must be positive"
        self.policy = policy
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._last_run: frozenset[str] = frozenset()
        self._nbytes = 0
        self._hits = self._misses = self._evictions = 0

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CacheEntry | None:
        entry = self._entries.get(key)
        if entry is None:
            self._misses += 1
            return None
        self._entries.move_to_end(key)
        self._hits += 1
        return entry

    def put(self, key: str, outputs: tuple[list[Any], ...], ui: dict[str, Any] | None) -> None:
        if self.policy == "none":
            return
        nbytes = estimate_nbytes(outputs)
        if nbytes > self.max_bytes:
            return  # larger than the whole budget: caching it would only evict everything else
        old = self._entries.pop(key, None)
        if old is not None:
            self._nbytes -= old.nbytes
        self._entries[key] = CacheEntry(outputs, ui, nbytes)
        self._nbytes += nbytes
        self._evict()

    def note_run(self, keys: Iterable[str]) -> None:
        """Record the signatures of the nodes of the run that is starting (see keep_last_run)."""
        self._last_run = frozenset(keys)

    def keep_last_run(self) -> int:
        """Drop every entry the last noted run's nodes do not have: what re-running that prompt,
        or a variant of it, needs stays; outputs of older prompts go. Returns the entries dropped."""
        stale = [key for key in self._entries if key not in self._last_run]
        for key in stale:
            self._nbytes -= self._entries.pop(key).nbytes
        self._evictions += len(stale)
        return len(stale)

    def clear(self) -> None:
        self._entries.clear()
        self._nbytes = 0

    def stats(self) -> CacheStats:
        return CacheStats(len(self._entries), self._nbytes, self._hits, self._misses, self._evictions)

    def _evict(self) -> None:
        while self._entries and (len(self._entries) > self.max_entries or self._nbytes > self.max_bytes):
            _, entry = self._entries.popitem(last=False)
            self._nbytes -= entry.nbytes
            self._evictions += 1


def estimate_nbytes(value: Any) -> int:
    """Bytes held by ``value``: tensor-like objects by storage (each storage counted once),
    containers recursively, anything else by ``sys.getsizeof``. Objects may report their own
    size through a ``nodeloom_nbytes()`` method (model handles do, so shared weights are not
    counted against the output cache)."""
    seen: set[int] = set()
    return _nbytes(value, seen)


def _nbytes(value: Any, seen: set[int]) -> int:
    if id(value) in seen:
        return 0
    seen.add(id(value))
    reporter = getattr(value, "nodeloom_nbytes", None)
    if callable(reporter):
        return int(reporter())
    storage = getattr(value, "untyped_storage", None)
    if callable(storage):  # a torch tensor, detected without importing torch
        store = storage()
        key = store.data_ptr()
        if key in seen:
            return 0
        seen.add(key)
        return int(store.nbytes())
    if hasattr(value, "nbytes") and hasattr(value, "dtype"):  # numpy arrays
        return int(value.nbytes)
    if isinstance(value, dict):
        return sys.getsizeof(value) + _sum(value.values(), seen)
    if isinstance(value, (list, tuple, set, frozenset)):
        return sys.getsizeof(value) + _sum(value, seen)
    return sys.getsizeof(value)


def _sum(values: Iterable[Any], seen: set[int]) -> int:
    return sum(_nbytes(v, seen) for v in values)
