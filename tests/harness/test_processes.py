"""Resource readings of a process tree from /proc: a child that spins and holds memory is counted."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from harness.processes import cpu_seconds, descendants, rss_mb

# The child allocates this much and spins until killed.
CHILD_MB = 64
SPUN_S = 0.2
_CHILD = f"b = bytearray({CHILD_MB} * 1024 * 1024)\nprint('ready', flush=True)\nwhile True: pass"


def test_a_spinning_child_adds_its_memory_and_cpu_time() -> None:
    pid = os.getpid()
    rss_before = rss_mb(pid)
    with subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == b"ready\n"
            cpu_before = cpu_seconds(pid)
            # Polled, not slept for: on a busy machine the child gets the CPU late.
            deadline = time.monotonic() + 10
            while cpu_seconds(pid) - cpu_before < SPUN_S and time.monotonic() < deadline:
                time.sleep(0.05)

            assert child.pid in descendants(pid)
            assert cpu_seconds(pid) - cpu_before >= SPUN_S
            assert rss_mb(pid) - rss_before >= CHILD_MB
        finally:
            child.kill()
            child.wait()
    assert child.pid not in descendants(pid)
