"""Resource use of a running server and the processes below it (front ends, inference process, fork servers,
preprocessing workers), from /proc."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (the fork server and the preprocessing workers)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            children += [int(child) for child in task.read_text().split()]
    return [pid, *(process for child in children for process in descendants(child))]


def rss_mb(pid: int) -> float:
    """Resident memory of the server and its worker processes (uploads are decoded in the workers)."""
    total_kb = 0
    for process in descendants(pid):
        try:
            status = Path(f"/proc/{process}/status").read_text()
        except FileNotFoundError:  # exited meanwhile
            continue
        total_kb += sum(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return total_kb / 1024


def pss_mb(pid: int) -> float:
    """Proportional memory of the server and the processes below it: each page shared by several of them (torch's
    libraries, in every process that imports it) counted once in all, as the kernel charges a container."""
    total_kb = 0
    for process in descendants(pid):
        try:
            rollup = Path(f"/proc/{process}/smaps_rollup").read_text()
        except (FileNotFoundError, ProcessLookupError):  # exited meanwhile
            continue
        total_kb += sum(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
    return total_kb / 1024


def cpu_seconds(pid: int) -> float:
    """User and system CPU time used so far by the server and the processes below it that are still running."""
    ticks = 0
    for process in descendants(pid):
        try:
            stat = Path(f"/proc/{process}/stat").read_text()
        except FileNotFoundError:
            continue
        # Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / _CLOCK_TICKS_PER_S
