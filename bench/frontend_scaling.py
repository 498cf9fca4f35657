"""How the service scales with HTTP front-end processes, and what each request costs each process, in one run.

Every configuration is a real ``python -m service`` on loopback, driven by ``wrk`` as in ``bench.run_bench`` (the
28x28 MNIST digit and the 280x280 canvas to ``/predict``, at 1 and 64 clients; ``--concurrencies 256`` is the
overload run, where clients resend every 503 at once). Beside throughput (all answers, and 2xx answers) and latency,
each cell records the CPU time (from /proc) that the front ends (with their preprocessing workers), the inference
process and the load generator spent, per request. From those costs it predicts the throughput of a host with
more cores: front ends on every core but the one the inference process needs, capped by that process's own cost
per request. Rounds are interleaved so slow spells of a noisy machine hit every configuration alike; each cell is
the median of its rounds. Output: ``bench/results/frontend_scaling.json``. About 10 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import resource
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.run_bench import RESULTS_DIR, WARMUP_S, Result, bench_images, median_result, wrk_result
from bench.wrk import failures, multipart, run_wrk
from harness.processes import cpu_seconds, descendants
from harness.server import RunningServer, start_server

logger = logging.getLogger("bench")

CONCURRENCIES = (1, 64)
# One inference process, N front ends; the v1 design (one process serving HTTP and inference) for reference; two
# front ends preparing uploads in their own thread instead of preprocessing workers; and the default design with
# the LeNet-5 digit check (version 2) pinned instead of the served CNN check, which costs the CNN's time again.
CONFIGS: dict[str, dict[str, str]] = {
    "one process (embedded)": {"DIGITS_ENGINE": "embedded", "DIGITS_WORKERS": "1"},
    "1 front end": {"DIGITS_WORKERS": "1"},
    "2 front ends": {"DIGITS_WORKERS": "2"},
    "3 front ends": {"DIGITS_WORKERS": "3"},
    "2 front ends, thread preprocessing": {"DIGITS_WORKERS": "2", "DIGITS_PREPROCESS_WORKERS": "0"},
    "2 front ends, LeNet-5 check": {"DIGITS_WORKERS": "2", "DIGITS_MODEL_VERSIONS": "check=2"},
}
PREDICT_CORES = 16
_ENGINE_READY = re.compile(r"inference process (\d+) ready")


@dataclass(frozen=True)
class Cell(Result):
    """A benchmark cell: the answers that were 2xx per second, and the CPU time per request of each group of
    processes."""

    ok_per_s: float
    front_end_cpu_ms: float
    inference_cpu_ms: float
    load_generator_cpu_ms: float


def _engine_pid(server: RunningServer) -> int | None:
    found = _ENGINE_READY.findall(server.log())
    return int(found[-1]) if found else None


def cpu_split(server: RunningServer) -> tuple[float, float]:
    """CPU seconds so far of the whole service and of its inference process (0 when embedded)."""
    engine = _engine_pid(server)
    return cpu_seconds(server.process.pid), cpu_seconds(engine) if engine in descendants(server.process.pid) else 0.0


def _wrk_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(config: str, server: RunningServer, image: str, body: Path, concurrency: int, duration_s: int) -> Cell:
    url = f"{server.url}/predict"
    run_wrk(url, body, concurrency, WARMUP_S)
    total_before, engine_before = cpu_split(server)
    wrk_before = _wrk_cpu_s()
    raw = run_wrk(url, body, concurrency, duration_s)
    wrk_s = _wrk_cpu_s() - wrk_before
    total_after, engine_after = cpu_split(server)
    requests = max(raw["requests"], 1)
    engine_s = engine_after - engine_before
    return Cell(
        **asdict(wrk_result(config, image, concurrency, raw)),
        ok_per_s=(raw["requests"] - failures(raw)) / (raw["duration_us"] / 1e6),
        front_end_cpu_ms=(total_after - total_before - engine_s) / requests * 1e3,
        inference_cpu_ms=engine_s / requests * 1e3,
        load_generator_cpu_ms=wrk_s / requests * 1e3,
    )


def median_cell(rounds: list[Cell]) -> Cell:
    """:func:`bench.run_bench.median_result`, and the median 2xx rate and CPU time of each group of processes."""
    cpu_fields = ("ok_per_s", "front_end_cpu_ms", "inference_cpu_ms", "load_generator_cpu_ms")
    return Cell(
        **asdict(median_result(list(rounds))),
        **{name: statistics.median(getattr(cell, name) for cell in rounds) for name in cpu_fields},
    )


def predicted_requests_per_s(cell: Cell, cores: int) -> dict[str, float]:
    """Throughput on ``cores`` cores with the load generator elsewhere: the front ends get every core but one
    (the inference process's), and the inference process, one event loop and one inference thread, serves at most
    one core's worth of its own cost per request."""
    front_ends = (cores - 1) / (cell.front_end_cpu_ms / 1e3)
    inference = 1 / (cell.inference_cpu_ms / 1e3)
    return {"front_end_bound": front_ends, "inference_bound": inference, "predicted": min(front_ends, inference)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration-s", type=int, default=5, help="measured seconds per cell (after warm-up)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--images", nargs="+", help="uploads to send (default: both)")
    parser.add_argument("--concurrencies", nargs="+", type=int, default=list(CONCURRENCIES))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "frontend_scaling.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rounds: dict[tuple[str, str, int], list[Cell]] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        bodies = {}
        for index, (image, data) in enumerate(bench_images().items()):
            if args.images and image not in args.images:
                continue
            bodies[image] = Path(tmp) / f"{index}.body"
            bodies[image].write_bytes(multipart(data))
        servers: dict[str, RunningServer] = {}
        for index, config in enumerate(args.configs):
            servers[config] = start_server(CONFIGS[config], Path(tmp) / f"{index}.log")
            stack.callback(servers[config].stop)
        for round_index in range(args.rounds):
            for config, server in servers.items():
                for image, body in bodies.items():
                    for concurrency in args.concurrencies:
                        cell = measure(config, server, image, body, concurrency, args.duration_s)
                        rounds.setdefault((config, image, concurrency), []).append(cell)
                        logger.info("round %d: %s", round_index + 1, cell)
    cells = [median_cell(cell_rounds) for cell_rounds in rounds.values()]
    predictions = [
        {"config": c.config, "image": c.image, "cores": PREDICT_CORES, **predicted_requests_per_s(c, PREDICT_CORES)}
        for c in cells
        if c.concurrency == max(CONCURRENCIES) and c.inference_cpu_ms > 0
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "cpu_count": len(os.sched_getaffinity(0)),
                "rounds": args.rounds,
                "duration_s": args.duration_s,
                "results": [asdict(c) for c in cells],
                "predicted": predictions,
                "every_round": [asdict(c) for cell_rounds in rounds.values() for c in cell_rounds],
            },
            indent=2,
        )
        + "\n"
    )
    for cell in cells:
        logger.info("%s", cell)


if __name__ == "__main__":
    main()
