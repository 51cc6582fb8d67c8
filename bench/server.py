"""Server throughput: N image workflows (EmptyImage → ImageScale → ImageInvert → SaveImage, each
a different colour so nothing is cached; 768² outputs by default) submitted over HTTP while M
websocket clients listen.

    python bench/server.py --start              # starts `nodeloom serve` on a free port first
    python bench/server.py --start --comfyui ~/ComfyUI --rounds 3   # and ComfyUI, interleaved
    python bench/server.py --url http://127.0.0.1:8188 -n 400 -m 4  # a server already running

Prints prompts/s and p50/p99 submit→execution_success latency. The physical floor is measured
in the same run: PNG encode + write of the same output image, as SaveImage does it, per core, times
the cores; throughput is printed as a fraction of it (target >= 0.5). For a server it starts, it
also prints the time to the first 200 of /system_stats beside the time to the first completed
prompt (NodeLoom answers only once a worker is warm), the CPU time each process of the server's
tree (and this client) spent per prompt (on a machine others load too, that shows where the time
goes when prompts/s cannot), and the tree's memory right after the run and after idling (RSS, PSS
and USS sums; targets are checked on PSS, which counts pages shared between processes once).

``--comfyui DIR`` runs ComfyUI from its checkout (``main.py --cpu``, with ``DIR/.venv``'s python if
there is one, or ``--comfyui-python``) through the same client, in its own temporary base folder,
alternating with NodeLoom for ``--rounds`` rounds, and prints the medians side by side with the
ratios the targets are set on: prompts/s >= 4x ComfyUI's, p99 latency <= 0.3x, the tree's memory
after the run <= 1.1x.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.proctree import cores, tree_cpu_seconds, tree_memory_mb  # noqa: E402
from server.client import Socket  # noqa: E402

IDLE_MEMORY_TARGET_MB = 600
FLOOR_FRACTION_TARGET = 0.5
# NodeLoom / ComfyUI: (figure, at least or at most, ratio)
COMFYUI_TARGETS = (("prompts_per_s", ">=", 4.0), ("latency_p99_s", "<=", 0.3), ("after_run_pss_mb", "<=", 1.1))


def workflow(index: int, size: int) -> dict:
    """``size``: the output side; EmptyImage makes half of it, ImageScale doubles it."""
    color = (index * 2654435761) & 0xFFFFFF  # a different colour per prompt: no cache hits
    half = max(size // 2, 1)
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": half, "height": half, "batch_size": 1, "color": color}},
            "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact",
                                                         "width": size, "height": size, "crop": "disabled"}},
            "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
            "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "bench"}}}


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
    return per_core * cores()


@dataclass(frozen=True)
class Server:
    """A server to start: ``command(port, base folder)`` is its command line, run in ``cwd``."""

    name: str
    command: Callable[[int, Path], list[str]]
    cwd: Path
    quiet: bool = False  # its own output thrown away
    folders: tuple[str, ...] = ()  # made in the base folder first


def nodeloom(extra: list[str]) -> Server:
    return Server("nodeloom", lambda port, base: [
        sys.executable, "-m", "server.cli", "--port", str(port), "--base", str(base), "--log-level", "warning",
        *extra], REPO)


def comfyui(folder: Path, python: str | None) -> Server:
    venv = folder / ".venv" / "bin" / "python"
    interpreter = python or (str(venv) if venv.exists() else sys.executable)
    return Server("comfyui", lambda port, base: [
        interpreter, "main.py", "--cpu", "--port", str(port), "--base-directory", str(base),
        "--database-url", f"sqlite:///{base / 'comfyui.db'}", "--disable-auto-launch", "--dont-print-server"],
        folder, quiet=True, folders=("custom_nodes",))


async def bench(url: str, count: int, listeners: int, size: int) -> dict[str, float]:
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
    return {"prompts_per_s": count / elapsed, "latency_p50_s": latencies[len(latencies) // 2],
            "latency_p99_s": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]}


def start(server: Server, base: Path) -> tuple[subprocess.Popen[bytes], str, dict[str, float]]:
    """Start ``server``; the seconds from the start to its first 200 of /system_stats and to the
    end of its first prompt (the smallest image workflow, its end seen in /history as any
    ComfyUI client sees it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    output = subprocess.DEVNULL if server.quiet else None
    began = time.perf_counter()
    process = subprocess.Popen(server.command(port, base), cwd=server.cwd, stdout=output, stderr=output)
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=60) as http:
        while True:
            try:
                if http.get("/system_stats").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                raise SystemExit(f"{server.name} exited with {process.returncode}")
            time.sleep(0.01)
        first_200 = time.perf_counter() - began
        response = http.post("/prompt", json={"prompt": workflow(0, 8)})
        response.raise_for_status()
        prompt_id = response.json()["prompt_id"]
        while prompt_id not in http.get(f"/history/{prompt_id}").json():
            time.sleep(0.005)
    return process, url, {"first_200_s": first_200, "first_prompt_done_s": time.perf_counter() - began}


def measure(server: Server, args: argparse.Namespace, floor: float) -> dict[str, float]:
    """One round of ``server``: started in a fresh base folder, the benchmark, its memory, stopped."""
    base = Path(tempfile.mkdtemp(prefix=f"{server.name}-bench-"))
    for folder in server.folders:
        (base / folder).mkdir()
    process, url, figures = start(server, base)
    print(f"[{server.name}] first_200_after_s={figures['first_200_s']:.2f} first_prompt_done_after_s="
          f"{figures['first_prompt_done_s']:.2f} (done - 200 = "
          f"{figures['first_prompt_done_s'] - figures['first_200_s']:.2f} s; target <= 0.5)")
    try:
        cpu_before, client_before = tree_cpu_seconds(process.pid), time.process_time()
        figures |= asyncio.run(bench(url, args.n, args.m, args.size))
        figures["cpu_ms_per_prompt"] = _print_cpu(server.name, cpu_before, tree_cpu_seconds(process.pid),
                                                  time.process_time() - client_before, args.n)
        figures["fraction_of_floor"] = figures["prompts_per_s"] / floor
        print(f"[{server.name}] prompts={args.n} listeners={args.m} output={args.size}x{args.size}px "
              f"throughput_prompts_per_s={figures['prompts_per_s']:.1f} "
              f"fraction_of_floor={figures['fraction_of_floor']:.2f} latency_p50_s={figures['latency_p50_s']:.3f} "
              f"latency_p99_s={figures['latency_p99_s']:.3f}")
        print(f"[{server.name}] process tree right after {args.n} prompts:")
        after = tree_memory_mb(process.pid)
        time.sleep(args.idle)
        print(f"[{server.name}] process tree after {args.idle:.0f} s idle:")
        idle = tree_memory_mb(process.pid)
        figures |= {"after_run_pss_mb": after["pss"], "after_run_rss_mb": after["rss"], "idle_pss_mb": idle["pss"],
                    "idle_rss_mb": idle["rss"]}
        print(f"[{server.name}] after_run_tree_pss_mb={after['pss']:.0f} (rss sum {after['rss']:.0f}) "
              f"idle_tree_pss_mb={idle['pss']:.0f} (rss sum {idle['rss']:.0f})")
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)
    return figures


def _print_cpu(name: str, before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
               client_seconds: float, count: int) -> float:
    """Where the CPU time of the run went, per prompt: each server process, and this client.
    Returns the total in ms per prompt."""
    total = client_seconds
    for pid, (command, seconds) in after.items():
        spent = seconds - before.get(pid, (command, 0.0))[1]
        total += spent
        role = "worker" if "server.execution.worker" in command else "server"
        print(f"[{name}] cpu_ms_per_prompt {role} pid {pid}: {spent * 1000 / count:.1f}")
    print(f"[{name}] cpu_ms_per_prompt client (this benchmark): {client_seconds * 1000 / count:.1f} "
          f"total: {total * 1000 / count:.1f}")
    return total * 1000 / count


def summarize(results: dict[str, list[dict[str, float]]]) -> None:
    """Medians over the rounds, the targets of NodeLoom alone, and its ratios to ComfyUI's."""
    medians = {name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
               for name, runs in results.items()}
    rounds = len(next(iter(results.values())))
    print(f"\nmedians of {rounds} round(s):")
    for key in medians["nodeloom"]:
        print(f"  {key:24}" + "".join(f" {name}={figures[key]:9.3f}" for name, figures in medians.items()))
    ours = medians["nodeloom"]
    checks = [("fraction of the PNG floor", ours["fraction_of_floor"], ">=", FLOOR_FRACTION_TARGET),
              ("idle tree PSS MB", ours["idle_pss_mb"], "<=", IDLE_MEMORY_TARGET_MB),
              ("first prompt done - first 200 (s)", ours["first_prompt_done_s"] - ours["first_200_s"], "<=", 0.5)]
    if "comfyui" in medians:
        checks += [(f"{key} / ComfyUI's", ours[key] / medians["comfyui"][key], sense, bound)
                   for key, sense, bound in COMFYUI_TARGETS]
    for label, value, sense, bound in checks:
        met = value >= bound if sense == ">=" else value <= bound
        print(f"  {label}: {value:.2f} (target {sense} {bound}): {'PASS' if met else 'FAIL'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8188", help="a running server (without --start)")
    parser.add_argument("--start", action="store_true", help="start a nodeloom server for each round")
    parser.add_argument("--comfyui", type=Path, help="a ComfyUI checkout to start and compare with (implies --start)")
    parser.add_argument("--comfyui-python", help="the python that runs ComfyUI (default: its .venv's)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds, alternating the servers; medians are printed")
    parser.add_argument("-n", type=int, default=400, help="prompts")
    parser.add_argument("-m", type=int, default=4, help="websocket listeners")
    parser.add_argument("--size", type=int, default=768, help="output image side (EmptyImage makes half, scaled x2)")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds to idle before the last memory reading")
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="extra `nodeloom serve` argument (every node pack is loaded, as a user's server does; "
                             "--serve-arg=--node-packs=nodes.core for the core pack alone)")
    args = parser.parse_args()
    floor = png_floor(args.size)
    print(f"floor_png_prompts_per_s={floor:.1f} ({cores()} cores, {args.size}x{args.size} PNG encode+write)")
    if not (args.start or args.comfyui):
        figures = asyncio.run(bench(args.url, args.n, args.m, args.size))
        print(" ".join(f"{key}={value:.3f}" for key, value in figures.items()) +
              f" fraction_of_floor={figures['prompts_per_s'] / floor:.2f} (target >= {FLOOR_FRACTION_TARGET})")
        return 0
    servers = [nodeloom(args.serve_arg)] + ([comfyui(args.comfyui.resolve(), args.comfyui_python)] if args.comfyui else [])
    results: dict[str, list[dict[str, float]]] = {server.name: [] for server in servers}
    for _ in range(args.rounds):
        for server in servers:
            results[server.name].append(measure(server, args, floor))
    summarize(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
