"""The bounded output cache."""

from __future__ import annotations

import torch

from graph_runtime.cache import OutputCache, estimate_nbytes


def put(cache: OutputCache, key: str, value: object = 1) -> None:
    cache.put(key, ([value],), None)


def test_bounded_by_entries_evicting_least_recently_used() -> None:
    cache = OutputCache(max_entries=3)
    for key in "abc":
        put(cache, key)
    assert cache.get("a") is not None  # a is now the most recent
    put(cache, "d")
    assert "b" not in cache and all(k in cache for k in "acd")
    assert cache.stats().evictions == 1 and len(cache) == 3


def test_bounded_by_bytes() -> None:
    cache = OutputCache(max_bytes=3 * 4096 + 1024)
    for key in "abcd":
        cache.put(key, ([torch.zeros(1024)],), None)  # 4 KiB each
    assert "a" not in cache and all(k in cache for k in "bcd")
    assert cache.stats().nbytes <= cache.max_bytes


def test_value_larger_than_the_budget_is_not_cached_and_evicts_nothing() -> None:
    cache = OutputCache(max_bytes=10_000)
    put(cache, "small")
    cache.put("huge", ([torch.zeros(100_000)],), None)
    assert "huge" not in cache and "small" in cache


def test_policy_none_keeps_nothing() -> None:
    cache = OutputCache(policy="none")
    put(cache, "a")
    assert "a" not in cache and cache.get("a") is None
    assert cache.stats().misses == 1


def test_replacing_a_key_updates_the_byte_count() -> None:
    cache = OutputCache()
    cache.put("a", ([torch.zeros(1000)],), None)
    cache.put("a", ([torch.zeros(10)],), None)
    assert len(cache) == 1 and cache.stats().nbytes < 1000


def test_tensor_storage_counted_once() -> None:
    base = torch.zeros(1000)
    views = [base, base[:10], base.view(10, 100), base.clone()]
    assert estimate_nbytes(views) - estimate_nbytes([]) < 2 * 4000 + 500
    assert estimate_nbytes([base]) >= 4000
    assert estimate_nbytes({"samples": base, "again": base[5:]}) < 4000 + 1000


def test_objects_may_report_their_own_size() -> None:
    class Handle:
        def nodeloom_nbytes(self) -> int:
            return 7

    assert estimate_nbytes(Handle()) == 7


def test_clear() -> None:
    cache = OutputCache()
    put(cache, "a")
    cache.clear()
    assert len(cache) == 0 and cache.stats().nbytes == 0


def test_keep_last_run_drops_only_what_the_last_run_did_not_have() -> None:
    cache = OutputCache()
    cache.note_run(["a", "b"])
    put(cache, "a", torch.zeros(100))
    put(cache, "b", torch.zeros(200))
    cache.note_run(["b", "c"])  # b is found in the cache by this run, c is new
    put(cache, "c", torch.zeros(300))
    assert cache.keep_last_run() == 1
    assert "a" not in cache and "b" in cache and "c" in cache
    assert cache.stats().nbytes == estimate_nbytes(([torch.zeros(200)],)) + estimate_nbytes(([torch.zeros(300)],))
    assert cache.stats().evictions == 1
