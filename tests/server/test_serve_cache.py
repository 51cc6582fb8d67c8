"""``nodeloom serve --cache-policy/--cache-max-entries/--cache-max-bytes``: the options of
run/batch, passed to every worker's OutputCache, with a byte bound by default; /system_stats
reports each worker's cache."""

from __future__ import annotations

import httpx

from server.cli import settings_from
from server.execution.local import worker_config
from tests.server.conftest import color_prompt, serve_args, start_server


def test_serve_parses_the_cache_options_and_bounds_bytes_by_default(tmp_path) -> None:
    default = worker_config(settings_from(serve_args(["--base", str(tmp_path)]), {}), "cpu")
    assert (default.cache_policy, default.cache_entries, default.cache_max_bytes) == ("lru", 256, 128 << 20)
    args = serve_args(["--base", str(tmp_path), "--cache-policy", "none", "--cache-max-entries", "3",
                       "--cache-max-bytes", "1000"])
    config = worker_config(settings_from(args, {}), "cpu")
    assert (config.cache_policy, config.cache_entries, config.cache_max_bytes) == ("none", 3, 1000)


def _cache_after_prompts(base, *options: str) -> dict:
    base.mkdir()
    server = start_server(base, *options)
    try:
        for red in (1, 2, 3):
            answer = httpx.post(f"{server.url}/prompt?wait=true", json={"prompt": color_prompt(red=red)}, timeout=60)
            assert answer.json()["status"] == "success", answer.text
        return httpx.get(f"{server.url}/system_stats", timeout=10).json()["nodeloom"]["workers"][0]["cache"]
    finally:
        server.stop()


def test_the_workers_cache_follows_the_options(tmp_path) -> None:
    kept = _cache_after_prompts(tmp_path / "lru", "--cache-max-entries", "2")
    assert kept["policy"] == "lru" and kept["max_entries"] == 2 and kept["max_bytes"] == 128 << 20
    assert kept["entries"] == 2 and kept["evictions"] >= 4
    none = _cache_after_prompts(tmp_path / "none", "--cache-policy", "none", "--cache-max-bytes", "4096")
    assert none["policy"] == "none" and none["max_bytes"] == 4096 and none["entries"] == 0
