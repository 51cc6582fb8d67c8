"""Server throughput: N image workflows (EmptyImage → ImageScale → ImageInvert → SaveImage, each
a different colour so nothing is cached; 768² outputs by default) submitted over HTTP while M
websocket clients listen.

    python bench/server.py --url http://127.0.0.1:8188 -n 400 -m 4
    python bench/server.py --start          # starts `nodeloom serve` on a free port first

Prints prompts/s and p50/p99 submit→execution_success latency; the same command pointed at
another ComfyUI-compatible server (--url) gives comparable figures. The physical floor is measured
in the same run: PNG encode + write of the same output image, as SaveImage does it, per core, times
the cores; throughput is printed as a fraction of it (target >= 0.5). With --start it also prints
the time to the first 200 of /system_stats beside the time to the first completed prompt (the
server answers only once a worker is warm), and the memory of the server's process tree after
the run and after idling (RSS, PSS and USS sums; the target is checked on PSS, which counts pages
shared between the processes once), and the CPU time each process (and this client) spent per
prompt: on a machine others load too, that shows where the time goes when prompts/s cannot.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import shutil
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
FLOOR_FRACTION_TARGET = 0.5


def workflow(index: int, size: int) -> dict:
    """``size``: the output side; EmptyImage makes half of it, ImageScale doubles it."""
    color = (index * 2654435761) & 0xFFFFFF  # a different colour per prompt: no cache hits
    half = max(size // 2, 1)
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": half, "height": half, "batch_size": 1, "color": color}},
            "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact",
                                                         "width": size, "height": size, "crop": "disabled"}},
            "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
            "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "bench"}}}


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def png_floor(size: int, seconds: float = 2.0) -> float:
    """Prompts/s the machine could reach if each prompt cost only its output's PNG encode and write
    (SaveImage's compress level 4, its text chunks): one core's rate times the cores."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    image = Image.new("RGB", (size, size), (0x12, 0x34, 0x56))
    info = PngInfo()
    info.add_text("prompt", '{"1": {"class_type": "EmptyImage"}}')
    with tempfile.TemporaryDirectory(prefix="nodeloom-floor-") as folder:
        count, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            image.save(Path(folder) / f"floor_{count % 8}.png", pnginfo=info, compress_level=4)
            count += 1
        per_core = count / (time.perf_counter() - began)
    return per_core * _cores()


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


def tree_cpu_seconds(pid: int) -> dict[int, tuple[str, float]]:
    """CPU time (user + system) so far of a process and each descendant, by pid: (name, seconds)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[str, float]] = {}
    for member in _tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rpartition(")")[2].split()
            name = Path(f"/proc/{member}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found[member] = (name, (int(fields[11]) + int(fields[12])) / ticks)
    return found


def print_cpu_per_prompt(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                         client_seconds: float, count: int) -> None:
    """Where the CPU time of the run went, per prompt: each server process, and this client."""
    total = client_seconds
    for pid, (name, seconds) in after.items():
        spent = seconds - before.get(pid, (name, 0.0))[1]
        total += spent
        role = "worker" if "server.execution.worker" in name else "server"
        print(f"cpu_ms_per_prompt {role} pid {pid}: {spent * 1000 / count:.1f}")
    print(f"cpu_ms_per_prompt client (this benchmark): {client_seconds * 1000 / count:.1f}")
    print(f"cpu_ms_per_prompt_total={total * 1000 / count:.1f}")


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


async def bench(url: str, count: int, listeners: int, size: int) -> float:
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
    print(f"prompts={count} listeners={listeners} output={size}x{size}px")
    print(f"throughput_prompts_per_s={count / elapsed:.1f}")
    print(f"latency_p50_s={p50:.3f} latency_p99_s={p99:.3f}")
    return count / elapsed


def start_server(extra: list[str]) -> tuple[subprocess.Popen[bytes], str, float, float]:
    """Start ``nodeloom serve``; the seconds to its first 200 of /system_stats and to its first
    completed prompt (the smallest image workflow), both from the start."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = Path(tempfile.mkdtemp(prefix="nodeloom-bench-"))
    atexit.register(shutil.rmtree, base, True)  # after main's finally has stopped the server
    began = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "server.cli", "--port", str(port), "--base", str(base),
                                "--node-packs", "nodes.core", "--log-level", "warning", *extra],
                               cwd=Path(__file__).resolve().parents[1])
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(f"{url}/system_stats", timeout=60).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise SystemExit("server exited")
        time.sleep(0.01)
    first_200 = time.perf_counter() - began
    response = httpx.post(f"{url}/prompt", params={"wait": "true"}, json={"prompt": workflow(0, 8)}, timeout=120)
    response.raise_for_status()
    return process, url, first_200, time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    parser.add_argument("--start", action="store_true", help="start a nodeloom server for the run")
    parser.add_argument("-n", type=int, default=400, help="prompts")
    parser.add_argument("-m", type=int, default=4, help="websocket listeners")
    parser.add_argument("--size", type=int, default=768, help="output image side (EmptyImage makes half, scaled x2)")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds to idle before the last memory reading")
    parser.add_argument("--serve-arg", action="append", default=[], help="extra `nodeloom serve` argument")
    args = parser.parse_args()
    process = None
    url = args.url
    floor = png_floor(args.size)
    print(f"floor_png_prompts_per_s={floor:.1f} ({_cores()} cores, {args.size}x{args.size} PNG encode+write)")
    if args.start:
        process, url, first_200, first_done = start_server(args.serve_arg)
        print(f"first_200_after_s={first_200:.2f} first_prompt_done_after_s={first_done:.2f} "
              f"(done - 200 = {first_done - first_200:.2f} s; target <= 0.5)")
    try:
        cpu_before = tree_cpu_seconds(process.pid) if process is not None else {}
        client_before = time.process_time()
        rate = asyncio.run(bench(url, args.n, args.m, args.size))
        if process is not None:
            print_cpu_per_prompt(cpu_before, tree_cpu_seconds(process.pid), time.process_time() - client_before, args.n)
        fraction = rate / floor
        print(f"fraction_of_floor={fraction:.2f} (target >= {FLOOR_FRACTION_TARGET}): "
              f"{'PASS' if fraction >= FLOOR_FRACTION_TARGET else 'FAIL'}")
        if process is not None:
            print(f"process tree right after {args.n} prompts:")
            after = tree_memory_mb(process.pid)
            print(f"after_run_tree_rss_sum_mb={after['rss']:.0f} pss_mb={after['pss']:.0f} uss_mb={after['uss']:.0f}")
            time.sleep(args.idle)
            print(f"process tree after {args.idle:.0f} s idle:")
            idle = tree_memory_mb(process.pid)
            print(f"idle_tree_rss_sum_mb={idle['rss']:.0f} idle_tree_pss_mb={idle['pss']:.0f} "
                  f"idle_tree_uss_mb={idle['uss']:.0f}")
            verdict = "PASS" if idle["pss"] <= IDLE_MEMORY_TARGET_MB else "FAIL"
            print(f"idle memory target <= {IDLE_MEMORY_TARGET_MB} MB, checked on PSS: {verdict}")
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
