"""Which HTTP server the service runs under: the same app, one process, under uvicorn with h11 and the asyncio loop
(what ``python -m service`` runs), uvicorn with httptools and uvloop, and Granian (Rust HTTP, ASGI with lifespan).

Two apps, each under every server: the service with the committed models (``service.main:create_app``) and the
bare endpoint (``bench.bare_app:create_app``, the ceiling of the HTTP stack). Every server is a real process on
loopback, all side by side (idle ones cost nothing); ``wrk`` (``bench/wrk.py``) sends the two digit uploads of
``bench.run_bench`` at 1, 8 and 64 clients and at an overload of 256, where the service's bounded backlogs answer
503 + Retry-After by design: 503s are counted apart from other non-2xx answers and from socket errors, and the
throughput counted is of 2xx answers. Each cell is measured once per round with the servers innermost, rounds
interleaved, so slow spells of a noisy machine hit every server alike; the tables show each cell's median over the
rounds, and the CPU time of the server's process tree (with the preprocessing workers) per answer. The service
runs as one replica is deployed (``bench.footprint.SERVER_ENV``). Results go to
``bench/results/http_servers.json`` (every round) and ``http_servers.md``. Run with ``python -m bench.http_servers``
(about 18 minutes with the defaults); ``--quick`` is the smoke run the tests use.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

from bench.footprint import SERVER_ENV
from bench.run_bench import RESULTS_DIR, bench_images
from bench.wrk import multipart, run_wrk, socket_errors
from harness.processes import cpu_seconds
from harness.server import RunningServer, free_port, start_command
from service.config import get_settings

logger = logging.getLogger("bench")

HOST = "127.0.0.1"
APPS = {"service": "service.main:create_app", "bare endpoint": "bench.bare_app:create_app"}
CONCURRENCIES = (1, 8, 64, 256)
# The quick smoke run: every server, the service, one upload, a normal and an overloaded load.
QUICK_APPS = ("service",)
QUICK_IMAGES = ("28x28 digit",)
QUICK_CONCURRENCIES = (8, 256)
# Shutdown is not measured. A Granian worker stopped while many requests are still in flight (just after a load)
# has refused to stop for over 30 s; killed after this grace, it does not outlive the run.
SHUTDOWN_GRACE_S = 5
PACKAGES = ("uvicorn", "h11", "httptools", "uvloop", "granian", "fastapi", "starlette")

ServerCommand = Callable[[str, int], list[str]]


def _uvicorn(http: str, loop: str) -> ServerCommand:
    """uvicorn's command line with the service's own server options (``service.supervisor.serve``) but ``http``
    and ``loop``, and uvicorn's own log format (access logging is off in both)."""

    def command(app: str, port: int) -> list[str]:
        settings = get_settings()
        return [
            *(sys.executable, "-m", "uvicorn", app, "--factory", "--host", HOST, "--port", str(port)),
            *("--http", http, "--loop", loop, "--lifespan", "on", "--log-level", "warning", "--no-access-log"),
            *("--limit-concurrency", str(settings.limit_concurrency), "--backlog", str(settings.backlog)),
            *("--timeout-graceful-shutdown", str(SHUTDOWN_GRACE_S)),
        ]

    return command


def _granian(app: str, port: int) -> list[str]:
    """One Granian worker serving the ASGI app with its lifespan (``asgi``; ``asginl`` would skip the model
    loading); uvloop pinned rather than "auto", and uvicorn's limits as its backlog and backpressure (Granian holds
    requests beyond it instead of answering 503)."""
    settings = get_settings()
    return [
        *(sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--host", HOST, "--port", str(port)),
        *("--workers", "1", "--loop", "uvloop", "--log-level", "warning", "--no-access-log"),
        *("--backlog", str(settings.backlog), "--backpressure", str(settings.limit_concurrency)),
        *("--workers-kill-timeout", str(SHUTDOWN_GRACE_S), app),
    ]


SERVERS: dict[str, ServerCommand] = {
    "uvicorn h11": _uvicorn("h11", "asyncio"),
    "uvicorn httptools+uvloop": _uvicorn("httptools", "uvloop"),
    "granian": _granian,
}
BASELINE = "uvicorn h11"


@dataclass(frozen=True)
class Result:
    """One cell (app, server, upload, clients) of one round, or its median over the rounds."""

    app: str
    server: str
    image: str
    concurrency: int
    requests: int  # answers of every status
    ok_per_s: float  # 2xx answers per second
    p50_ms: float  # latencies of every answer, 503s included
    p99_ms: float
    p99_over_p50: float
    status_503: int
    non_2xx: int  # other than 503
    errors: int  # connect, read and write errors and timeouts
    cpu_ms_per_request: float  # the server's process tree, per answer


def measure(
    app: str, server: str, running: RunningServer, image: str, body_file: Path, concurrency: int, duration_s: int
) -> Result:
    """A warm-up run, then a measured run with the server's CPU time read before and after."""
    url = f"{running.url}/predict"
    run_wrk(url, body_file, concurrency, min(2, duration_s))  # connections, caches, allocator
    cpu_before_s = cpu_seconds(running.process.pid)
    raw = run_wrk(url, body_file, concurrency, duration_s, count_503=True)
    cpu_s = cpu_seconds(running.process.pid) - cpu_before_s
    requests = raw["requests"]
    if requests == 0:
        raise RuntimeError(f"{server} serving {app} answered nothing at {concurrency} clients:\n{running.log()}")
    p50_ms, p99_ms = raw["p50_us"] / 1e3, raw["p99_us"] / 1e3
    return Result(
        app=app,
        server=server,
        image=image,
        concurrency=concurrency,
        requests=requests,
        ok_per_s=(requests - raw["non_2xx"]) / (raw["duration_us"] / 1e6),
        p50_ms=p50_ms,
        p99_ms=p99_ms,
        p99_over_p50=p99_ms / p50_ms,
        status_503=raw["status_503"],
        non_2xx=raw["non_2xx"] - raw["status_503"],
        errors=socket_errors(raw),
        cpu_ms_per_request=1e3 * cpu_s / requests,
    )


def median_result(rounds: Sequence[Result]) -> Result:
    """One cell over its rounds: the median of each rate and latency, the sum of the counts; p99 / p50 of the
    medians."""
    first = rounds[0]
    p50_ms = statistics.median(r.p50_ms for r in rounds)
    p99_ms = statistics.median(r.p99_ms for r in rounds)
    return Result(
        app=first.app,
        server=first.server,
        image=first.image,
        concurrency=first.concurrency,
        requests=sum(r.requests for r in rounds),
        ok_per_s=statistics.median(r.ok_per_s for r in rounds),
        p50_ms=p50_ms,
        p99_ms=p99_ms,
        p99_over_p50=p99_ms / p50_ms,
        status_503=sum(r.status_503 for r in rounds),
        non_2xx=sum(r.non_2xx for r in rounds),
        errors=sum(r.errors for r in rounds),
        cpu_ms_per_request=statistics.median(r.cpu_ms_per_request for r in rounds),
    )


def _cell_text(result: Result) -> str:
    text = f"{result.ok_per_s:,.0f} ({result.p50_ms:.1f} / {result.p99_ms:.1f})"
    if result.status_503:
        text += f", {result.status_503 / result.requests:.0%} 503"
    return text


def markdown_tables(results: Sequence[Result]) -> str:
    """Throughput and latency per cell with each server's ratio to uvicorn h11; then cost per answer and counts."""
    by_key = {(r.app, r.server, r.image, r.concurrency): r for r in results}
    servers = list(dict.fromkeys(r.server for r in results))
    others = [s for s in servers if s != BASELINE]
    lines = [
        "| app | upload | clients | "
        + " | ".join(f"{s} 2xx/s (p50 / p99 ms)" for s in servers)
        + "".join(f" | {s} / {BASELINE}" for s in others)
        + " |",
        "|---|---|---:|" + "---:|" * (len(servers) + len(others)),
    ]
    cells = dict.fromkeys((r.app, r.image, r.concurrency) for r in results)
    for app, image, c in cells:
        base = by_key[(app, BASELINE, image, c)].ok_per_s
        texts = [_cell_text(by_key[(app, s, image, c)]) for s in servers]
        texts += [f"{by_key[(app, s, image, c)].ok_per_s / base:.2f}x" if base else "-" for s in others]
        lines.append(f"| {app} | {image} | {c} | " + " | ".join(texts) + " |")
    lines += [
        "",
        "| app | server | CPU ms per answer at "
        + " / ".join(str(c) for c in dict.fromkeys(r.concurrency for r in results))
        + " clients (first upload) | 503 | other non-2xx | socket errors |",
        "|---|---|---:|---:|---:|---:|",
    ]
    first_image = results[0].image
    for app in dict.fromkeys(r.app for r in results):
        for server in servers:
            mine = [r for r in results if r.app == app and r.server == server]
            cpu = " / ".join(f"{r.cpu_ms_per_request:.2f}" for r in mine if r.image == first_image)
            lines.append(
                f"| {app} | {server} | {cpu} | {sum(r.status_503 for r in mine)} "
                f"| {sum(r.non_2xx for r in mine)} | {sum(r.errors for r in mine)} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=int, default=5, help="measured seconds per cell (after warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurements of every cell")
    parser.add_argument("--quick", action="store_true", help="one round of 1 s per cell, on a subset of the cells")
    parser.add_argument("--machine-note", default="", help="written into the JSON, e.g. that the machine was busy")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    images = bench_images()
    apps = APPS
    concurrencies: tuple[int, ...] = CONCURRENCIES
    if args.quick:
        args.duration_s, args.rounds = 1, 1
        apps = {name: APPS[name] for name in QUICK_APPS}
        images = {name: images[name] for name in QUICK_IMAGES}
        concurrencies = QUICK_CONCURRENCIES
    rounds: dict[tuple[str, str, str, int], list[Result]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        bodies: dict[str, Path] = {}
        for name, data in images.items():
            bodies[name] = Path(tmp) / f"{len(bodies)}.body"
            bodies[name].write_bytes(multipart(data))
        running: dict[tuple[str, str], RunningServer] = {}
        for app, target in apps.items():
            for server, command in SERVERS.items():
                port = free_port()
                log_path = Path(tmp) / f"{len(running)}.log"
                running[(app, server)] = start_command(command(target, port), SERVER_ENV, log_path, port)
                stack.callback(running[(app, server)].stop)
        for round_index in range(args.rounds):
            for app in apps:
                for image, body_file in bodies.items():
                    for concurrency in concurrencies:
                        for server in SERVERS:
                            target_server = running[(app, server)]
                            result = measure(app, server, target_server, image, body_file, concurrency, args.duration_s)
                            rounds.setdefault((app, server, image, concurrency), []).append(result)
                            logger.info("round %d: %s", round_index + 1, result)
    results = [median_result(cell) for cell in rounds.values()]
    tables = markdown_tables(results)
    output = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "date": time.strftime("%Y-%m-%d"),
        },
        "machine_note": args.machine_note,
        "packages": {name: version(name) for name in PACKAGES},
        "servers": {server: command("APP", 0)[1:] for server, command in SERVERS.items()},
        "server_env": {**SERVER_ENV, "DIGITS_MODEL_STORE_DIR": "model_store"},  # from the repository root
        "rounds": args.rounds,
        "duration_s": args.duration_s,
        "wall_s": round(time.monotonic() - started),
        "results": [asdict(r) for r in results],
        "every_round": [asdict(r) for cell in rounds.values() for r in cell],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "http_servers.json").write_text(json.dumps(output, indent=2) + "\n")
    (args.out / "http_servers.md").write_text(tables + "\n")
    logger.info("\n%s", tables)


if __name__ == "__main__":
    main()
