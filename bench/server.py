"""Server throughput: N image workflows (EmptyImage → ImageScale → SaveImage, each a different
colour so nothing is cached) submitted over HTTP while M websocket clients listen.

    python bench/server.py --url http://127.0.0.1:8188 -n 200 -m 4
    python bench/server.py --start          # starts `nodeloom serve` on a free port first

Prints prompts/s and p50/p99 submit→execution_success latency; the same command pointed at
another ComfyUI-compatible server (--url) gives comparable figures. With --start it also prints the
startup time and the idle memory of the server's process tree (RSS, PSS and USS sums; the target
is checked on PSS, which counts pages shared between the processes once).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server.client import Socket  # noqa: E402


IDLE_MEMORY_TARGET_MB = 600


def workflow(index: int, size: int) -> dict:
    color = (index * 2654435761) & 0xFFFFFF  # a different colour per prompt: no cache hits
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1, "color": color}},
            "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact",
                                                         "width": size * 2, "height": size * 2, "crop": "disabled"}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "bench"}}}


def _tree(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                stack.extend(int(c) for c in task.read_text().split())
            except OSError:
                continue
    return found


def _memory_kb(pid: int) -> dict[str, int]:
    """Rss, Pss and private (USS) memory of one process, from /proc/PID/smaps_rollup (what
    psutil's memory_full_info reads)."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0])
    return {"rss": values["Rss"], "pss": values["Pss"],
            "uss": values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)}


def tree_memory_mb(pid: int) -> dict[str, float]:
    """Memory of a process and all its descendants, summed three ways. RSS counts a page shared by
    two processes (libraries, the interpreter) twice; PSS splits it between them, so the PSS sum
    is the tree's real footprint (a little less where processes outside the tree share pages
    too); USS counts only private pages, the floor."""
    totals = {"rss": 0.0, "pss": 0.0, "uss": 0.0}
    for member in _tree(pid):
        try:
            memory = _memory_kb(member)
        except (OSError, KeyError, ValueError):
            continue  # exited meanwhile
        for key in totals:
            totals[key] += memory[key] / 1024
        name = Path(f"/proc/{member}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        print(f"  pid {member}: rss={memory['rss'] / 1024:.0f} MB pss={memory['pss'] / 1024:.0f} MB "
              f"uss={memory['uss'] / 1024:.0f} MB  {name[:70]}")
    return totals


async def bench(url: str, count: int, listeners: int, size: int) -> None:
    client_id = uuid.uuid4().hex
    sockets = [Socket(url, client_id if i == 0 else uuid.uuid4().hex) for i in range(max(listeners, 1))]
    for s in sockets:
        await s.__aenter__()
    submitted: dict[str, float] = {}
    finished: dict[str, float] = {}
    done = asyncio.Event()

    async def listen() -> None:
        async for event in sockets[0].events():
            if isinstance(event, dict) and event.get("type") in ("execution_success", "execution_error"):
                finished[event["data"]["prompt_id"]] = time.perf_counter()
                if event["type"] == "execution_error":
                    print("error:", event["data"].get("exception_message"), file=sys.stderr)
                if len(finished) >= count:
                    done.set()
                    return

    async def drain(s: Socket) -> None:
        async for _ in s.events():
            pass

    tasks = [asyncio.create_task(listen())] + [asyncio.create_task(drain(s)) for s in sockets[1:]]
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for index in range(count):
            before = time.perf_counter()
            response = await http.post("/prompt", json={"prompt": workflow(index, size), "client_id": client_id})
            response.raise_for_status()
            submitted[response.json()["prompt_id"]] = before
    await asyncio.wait_for(done.wait(), timeout=600)
    elapsed = time.perf_counter() - started
    latencies = sorted(finished[p] - submitted[p] for p in submitted if p in finished)
    for task in tasks:
        task.cancel()
    for s in sockets:
        await s.__aexit__()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"prompts={count} listeners={listeners} image={size}->{size * 2}px")
    print(f"throughput_prompts_per_s={count / elapsed:.1f}")
    print(f"latency_p50_s={p50:.3f} latency_p99_s={p99:.3f}")


def start_server() -> tuple[subprocess.Popen[bytes], str, float]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = Path(tempfile.mkdtemp(prefix="nodeloom-bench-"))
    began = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "server.cli", "--port", str(port), "--base", str(base),
                                "--node-packs", "nodes.core", "--log-level", "warning"],
                               cwd=Path(__file__).resolve().parents[1])
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            response = httpx.post(f"{url}/prompt", json={"prompt": workflow(0, 8)}, timeout=60)
            if response.status_code == 200:
                return process, url, time.perf_counter() - began
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise SystemExit("server exited")
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    parser.add_argument("--start", action="store_true", help="start a nodeloom server for the run")
    parser.add_argument("-n", type=int, default=200, help="prompts")
    parser.add_argument("-m", type=int, default=4, help="websocket listeners")
    parser.add_argument("--size", type=int, default=64, help="EmptyImage side (scaled ×2)")
    args = parser.parse_args()
    process = None
    url = args.url
    if args.start:
        process, url, ready = start_server()
        print(f"first_prompt_accepted_after_s={ready:.2f} (target <= 3)")
        warm = httpx.post(f"{url}/prompt", params={"wait": "true"}, json={"prompt": workflow(1, 8)}, timeout=120)
        warm.raise_for_status()
        time.sleep(2.0)
        print("idle process tree (server + workers), 2 s after a warm-up prompt:")
        memory = tree_memory_mb(process.pid)
        verdict = "PASS" if memory["pss"] <= IDLE_MEMORY_TARGET_MB else "FAIL"
        print(f"idle_tree_rss_sum_mb={memory['rss']:.0f} idle_tree_pss_mb={memory['pss']:.0f} "
              f"idle_tree_uss_mb={memory['uss']:.0f}")
        print(f"idle memory target <= {IDLE_MEMORY_TARGET_MB} MB, checked on PSS (shared pages counted once): "
              f"{verdict}")
    try:
        asyncio.run(bench(url, args.n, args.m, args.size))
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
