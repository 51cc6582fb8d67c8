"""A server's process tree, read from /proc: its members, their memory and their CPU time."""

from __future__ import annotations

import os
from pathlib import Path


def tree(pid: int) -> list[int]:
    """``pid`` and every descendant."""
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


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def memory_kb(pid: int) -> dict[str, int]:
    """Rss, Pss and private (USS) memory of one process, from /proc/PID/smaps_rollup (what
    psutil's memory_full_info reads)."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0])
    return {"rss": values["Rss"], "pss": values["Pss"],
            "uss": values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)}


def tree_memory_mb(pid: int, *, verbose: bool = True) -> dict[str, float]:
    """Memory of a process and all its descendants, summed three ways. RSS counts a page shared by
    two processes (libraries, the interpreter) twice; PSS splits it between them, so the PSS sum
    is the tree's real footprint (a little less where processes outside the tree share pages
    too); USS counts only private pages, the floor."""
    totals = {"rss": 0.0, "pss": 0.0, "uss": 0.0}
    for member in tree(pid):
        try:
            memory = memory_kb(member)
            name = command_line(member)
        except (OSError, KeyError, ValueError):
            continue  # exited meanwhile
        for key in totals:
            totals[key] += memory[key] / 1024
        if verbose:
            print(f"  pid {member}: rss={memory['rss'] / 1024:.0f} MB pss={memory['pss'] / 1024:.0f} MB "
                  f"uss={memory['uss'] / 1024:.0f} MB  {name[:70]}")
    return totals


def tree_cpu_seconds(pid: int) -> dict[int, tuple[str, float]]:
    """CPU time (user + system) so far of a process and each descendant, by pid: (name, seconds)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[str, float]] = {}
    for member in tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rpartition(")")[2].split()
            name = command_line(member)
        except OSError:
            continue
        found[member] = (name, (int(fields[11]) + int(fields[12])) / ticks)
    return found


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
