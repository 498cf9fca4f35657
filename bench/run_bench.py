"""Throughput and latency of the running service: batching on, batching off, and the bare HTTP stack, in one run.

Each configuration is a real server process on loopback, driven by ``wrk`` (closed loop, C clients) with multipart
uploads: a 28x28 MNIST digit PNG and a 280x280 RGBA canvas drawing to ``/predict``, and a 5-digit canvas line and
a 7-digit phone photo to ``/read`` (the bare endpoint reads and decodes both routes' uploads alike). All servers
run side by side (idle ones cost nothing) and every cell is measured once per round, rounds interleaved, so slow
spells of a noisy machine hit every configuration alike; the table shows each cell's median over the rounds. Results go
to ``bench/results/bench.json`` (every round) and ``bench/results/bench.md``. Run with ``make bench`` (needs
Debian's ``wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.read_latency import uploads as line_uploads
from bench.wrk import multipart, run_wrk
from harness.server import REPO_ROOT, start_server
from training.data import default_data_dir, load_mnist

logger = logging.getLogger("bench")

RESULTS_DIR = REPO_ROOT / "bench" / "results"
# The canvas of the web page: 280x280, i.e. MNIST's 28x28 scaled 10x, black ink on a transparent background.
CANVAS_SCALE = 10
CONCURRENCIES = (1, 8, 64)
# Same number of server processes for every configuration, so the ratios compare stacks, not process counts.
CONFIGS: dict[str, tuple[str, dict[str, str]]] = {
    "batching": ("service", {}),
    "no batching": ("service", {"DIGITS_MAX_BATCH_SIZE": "1"}),
    "bare endpoint": ("bench.bare_app", {}),
}


@dataclass(frozen=True)
class Result:
    config: str
    image: str
    concurrency: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Upload:
    """One benchmarked request: the route it goes to and the file it sends."""

    route: str
    data: bytes


def bench_images() -> dict[str, bytes]:
    """The two digit uploads: MNIST test digit 0 as a PNG, and the same digit drawn as a 280x280 RGBA canvas."""
    images, _labels = load_mnist(default_data_dir(), "test")
    digit = images[0].numpy()
    ink = Image.fromarray(digit).resize((28 * CANVAS_SCALE,) * 2, Image.Resampling.BILINEAR)
    canvas = Image.new("RGBA", ink.size, (0, 0, 0, 0))
    canvas.putalpha(ink)
    return {"28x28 digit": _png(Image.fromarray(digit)), "280x280 canvas": _png(canvas)}


def bench_uploads() -> dict[str, Upload]:
    """The digit uploads to ``/predict`` and the two lines of ``bench.read_latency`` to ``/read``."""
    return {
        **{name: Upload("/predict", data) for name, data in bench_images().items()},
        **{f"{name} line": Upload("/read", data) for name, data in line_uploads().items()},
    }


def measure(config: str, url: str, image: str, body_file: Path, concurrency: int, duration_s: int) -> Result:
    run_wrk(url, body_file, concurrency, min(2, duration_s))  # warm-up: connections, caches, allocator
    raw = run_wrk(url, body_file, concurrency, duration_s)
    errors = sum(raw[k] for k in ("non_2xx", "connect_errors", "read_errors", "write_errors", "timeouts"))
    return Result(
        config=config,
        image=image,
        concurrency=concurrency,
        requests_per_s=raw["requests"] / (raw["duration_us"] / 1e6),
        p50_ms=raw["p50_us"] / 1e3,
        p99_ms=raw["p99_us"] / 1e3,
        errors=errors,
    )


def median_result(rounds: list[Result]) -> Result:
    """One cell over its rounds: the median of each measure, the sum of the errors."""
    first = rounds[0]
    return Result(
        config=first.config,
        image=first.image,
        concurrency=first.concurrency,
        requests_per_s=statistics.median(r.requests_per_s for r in rounds),
        p50_ms=statistics.median(r.p50_ms for r in rounds),
        p99_ms=statistics.median(r.p99_ms for r in rounds),
        errors=sum(r.errors for r in rounds),
    )


def markdown_table(results: list[Result]) -> str:
    by_key = {(r.config, r.image, r.concurrency): r for r in results}
    lines = [
        "| image | clients | batching req/s (p50 / p99 ms) | no batching req/s (p50 / p99 ms) "
        "| bare endpoint req/s | batching / no batching | batching / bare |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for image in dict.fromkeys(r.image for r in results):
        for c in CONCURRENCIES:
            on, off, bare = (by_key[(k, image, c)] for k in CONFIGS)
            lines.append(
                f"| {image} | {c} | {on.requests_per_s:,.0f} ({on.p50_ms:.1f} / {on.p99_ms:.1f}) "
                f"| {off.requests_per_s:,.0f} ({off.p50_ms:.1f} / {off.p99_ms:.1f}) | {bare.requests_per_s:,.0f} "
                f"| {on.requests_per_s / off.requests_per_s:.2f}x | {on.requests_per_s / bare.requests_per_s:.0%} |"
            )
    errors = sum(r.errors for r in results)
    lines.append("")
    lines.append(f"Errors (non-2xx or socket) over all runs: {errors}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration-s", type=int, default=8, help="measured seconds per cell (after warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurements of every cell")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    uploads = bench_uploads()
    rounds: dict[tuple[str, str, int], list[Result]] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as servers:
        bodies: dict[str, Path] = {}
        for name, upload in uploads.items():
            bodies[name] = Path(tmp) / f"{len(bodies)}.body"
            bodies[name].write_bytes(multipart(upload.data))
        urls: dict[str, str] = {}
        for config, (module, env) in CONFIGS.items():
            server = start_server(env, Path(tmp) / f"{module}.{len(urls)}.log", module=module)
            servers.callback(server.stop)
            urls[config] = server.url
        for round_index in range(args.rounds):
            for config, url in urls.items():
                for image, body_file in bodies.items():
                    for concurrency in CONCURRENCIES:
                        route = f"{url}{uploads[image].route}"
                        result = measure(config, route, image, body_file, concurrency, args.duration_s)
                        rounds.setdefault((config, image, concurrency), []).append(result)
                        logger.info("round %d: %s", round_index + 1, result)
    results = [median_result(cell) for cell in rounds.values()]
    args.out.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    (args.out / "bench.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "rounds": args.rounds,
                "duration_s": args.duration_s,
                "results": [asdict(r) for r in results],
                "every_round": [asdict(r) for cell in rounds.values() for r in cell],
            },
            indent=2,
        )
        + "\n"
    )
    (args.out / "bench.md").write_text(markdown_table(results) + "\n")
    logger.info("\n%s", markdown_table(results))


if __name__ == "__main__":
    main()
