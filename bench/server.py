"""Server throughput: N image workflows (EmptyImage → ImageScale → SaveImage, each a different
colour so nothing is cached) submitted over HTTP while M websocket clients listen.

    python bench/server.py --url http://127.0.0.1:8188 -n 200 -m 4
    python bench/server.py --start          # starts `nodeloom serve` on a free port first

Prints prompts/s and p50/p99 submit→execution_success latency; the same command pointed at
another ComfyUI-compatible server (--url) gives comparable figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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


def workflow(index: int, size: int) -> dict:
    color = (index * 2654435761) & 0xFFFFFF  # a different colour per prompt: no cache hits
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1, "color": color}},
            "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact",
                                                         "width": size * 2, "height": size * 2, "crop": "disabled"}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "bench"}}}


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, from /proc."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (OSError, StopIteration):
            continue
        stack.extend(int(c) for c in children)
    return total / 1024


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
        print(f"first_prompt_accepted_after_s={ready:.2f}")
        time.sleep(2.0)
        print(f"idle_tree_rss_mb={tree_rss_mb(process.pid):.0f}")
    try:
        asyncio.run(bench(url, args.n, args.m, args.size))
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
