"""Driving Debian's ``wrk`` (closed loop, C clients) with one multipart upload through ``bench/multipart.lua``:
the request body, one run, and the summary the script prints."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from harness.server import REPO_ROOT

LUA_SCRIPT = REPO_ROOT / "bench" / "multipart.lua"
BOUNDARY = "digitsbenchboundary"


def multipart(data: bytes) -> bytes:
    """A ``multipart/form-data`` body with ``data`` as the ``file`` field, as the web page sends it."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="digit.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def run_wrk(url: str, body_file: Path, concurrency: int, duration_s: int, *, count_503: bool = False) -> dict[str, int]:
    """POST ``body_file`` to ``url`` for ``duration_s``; the script's counts and latencies (microseconds).

    With ``count_503`` the summary also holds ``status_503``, the 503 answers among ``non_2xx``: the script then
    reads every response in Lua, which costs the client CPU, so it is asked for only where it is wanted.
    """
    env = {**os.environ, "BENCH_BODY_FILE": str(body_file), "BENCH_BOUNDARY": BOUNDARY}
    if count_503:
        env["BENCH_COUNT_503"] = "1"
    command = ["wrk", f"-c{concurrency}", f"-t{min(2, concurrency)}", f"-d{duration_s}s", "--timeout", "10s"]
    run = subprocess.run([*command, "-s", str(LUA_SCRIPT), url], env=env, capture_output=True, text=True)
    match = re.search(r"^BENCH_JSON (.*)$", run.stdout, re.MULTILINE)
    if run.returncode != 0 or match is None:
        raise RuntimeError(f"wrk on {url} exited with {run.returncode}:\n{run.stdout}{run.stderr}")
    summary: dict[str, int] = json.loads(match.group(1))
    return summary


def socket_errors(summary: dict[str, int]) -> int:
    """Connections that failed, broke or timed out in a run's summary."""
    return sum(summary[key] for key in ("connect_errors", "read_errors", "write_errors", "timeouts"))


def failures(summary: dict[str, int]) -> int:
    """Requests of a run's summary that got no 2xx answer: non-2xx statuses and socket errors."""
    return summary["non_2xx"] + socket_errors(summary)
