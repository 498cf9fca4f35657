"""Throughput and latency of the running service in its configurations, of the bare HTTP stack, and of the model
servers users would otherwise pick, in one run.

Each configuration is a real server process on loopback, driven by ``wrk`` (closed loop, C clients) with multipart
uploads: a 28x28 MNIST digit PNG and a 280x280 RGBA canvas drawing to ``/predict``, and a 5-digit canvas line and
a 7-digit phone photo to ``/read`` (the bare endpoint reads and decodes both routes' uploads alike). The service
runs with its defaults (one HTTP front end per core feeding one inference process, batching on), without
batching, and as one process serving HTTP and inference. The peers
(``bench/peers/``: gunicorn + Flask, BentoML and TorchServe with their batching) serve the same store's digit
classifiers with the same preprocessing and take only the digit uploads. All servers run side by side (idle ones
cost nothing), each answers a real upload before any measurement starts, and every cell is measured once per
round, rounds interleaved, so slow spells of a noisy machine hit every configuration alike; the table shows each
cell's median over the rounds. ``--configs`` and ``--images`` pick a subset of the matrix.

A cell costs a 2 s warm-up plus ``--duration-s``; the default run (every configuration, 8 s, 3 rounds: 78 cells
per round) takes about 40 minutes. Results go to ``bench/results/bench.json`` (every round) and
``bench/results/bench.md``.
Run with ``make bench``: it needs Debian's ``wrk``, and for the peers ``pip install -e '.[peers]'`` and a Java 17
runtime (TorchServe's front end; Debian's ``openjdk-17-jre-headless``).
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
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from bench.read_latency import uploads as line_uploads
from bench.wrk import BOUNDARY, failures, multipart, run_wrk
from harness.server import READY_TIMEOUT_S, REPO_ROOT, start_server
from training.data import default_data_dir, load_mnist

logger = logging.getLogger("bench")

RESULTS_DIR = REPO_ROOT / "bench" / "results"
# The canvas of the web page: 280x280, i.e. MNIST's 28x28 scaled 10x, black ink on a transparent background.
CANVAS_SCALE = 10
CONCURRENCIES = (1, 8, 64)
# The warm-up before each measured cell: connections, caches, allocator.
WARMUP_S = 2
# Where the service takes each upload; a server that takes only some of them maps only those to its own paths.
SERVICE_ROUTES = {"/predict": "/predict", "/read": "/read"}
DIGIT_ROUTES = {"/predict": "/predict"}


@dataclass(frozen=True)
class ServerConfig:
    """One benchmarked server: ``python -m <module>`` with ``env``, ready when ``health_path`` answers 200, and the
    path on it of each service route it takes (uploads to other routes are not sent to it)."""

    module: str
    env: Mapping[str, str] = field(default_factory=dict)
    health_path: str = "/health/ready"
    routes: Mapping[str, str] = field(default_factory=lambda: SERVICE_ROUTES)


CONFIGS: dict[str, ServerConfig] = {
    # The service's defaults: one front end per core and one inference process (bench.frontend_scaling varies them).
    "batching": ServerConfig("service"),
    "no batching": ServerConfig("service", {"DIGITS_MAX_BATCH_SIZE": "1"}),
    # One process serving HTTP and inference, as the service did before it had front ends.
    "one process": ServerConfig("service", {"DIGITS_ENGINE": "embedded", "DIGITS_WORKERS": "1"}),
    "bare endpoint": ServerConfig("bench.bare_app"),
    "gunicorn + Flask": ServerConfig("bench.peers.flask_app", routes=DIGIT_ROUTES),
    "BentoML": ServerConfig("bench.peers.bento_service", health_path="/readyz", routes=DIGIT_ROUTES),
    "TorchServe": ServerConfig(
        "bench.peers.torchserve_handler", health_path="/ping", routes={"/predict": "/predictions/digits"}
    ),
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


def wait_until_answers(url: str, body: bytes, timeout_s: float = READY_TIMEOUT_S) -> None:
    """POST ``body`` to ``url`` until it is answered with 2xx: some servers report healthy while their model
    workers are still loading, and that loading must not overlap another server's measurement."""
    deadline = time.monotonic() + timeout_s
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    while time.monotonic() < deadline:
        try:
            if httpx.post(url, content=body, headers=headers, timeout=timeout_s).is_success:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer an upload within {timeout_s} s")


def wrk_result(config: str, image: str, concurrency: int, raw: dict[str, int]) -> Result:
    """One cell from a ``wrk`` run's summary."""
    return Result(
        config=config,
        image=image,
        concurrency=concurrency,
        requests_per_s=raw["requests"] / (raw["duration_us"] / 1e6),
        p50_ms=raw["p50_us"] / 1e3,
        p99_ms=raw["p99_us"] / 1e3,
        errors=failures(raw),
    )


def measure(config: str, url: str, image: str, body_file: Path, concurrency: int, duration_s: int) -> Result:
    run_wrk(url, body_file, concurrency, min(WARMUP_S, duration_s))
    return wrk_result(config, image, concurrency, run_wrk(url, body_file, concurrency, duration_s))


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


def bench_cells(configs: Mapping[str, ServerConfig], uploads: Mapping[str, Upload]) -> list[tuple[str, str]]:
    """Every (configuration, upload) pair the run measures: each upload on the servers that take its route."""
    return [(c, image) for c, config in configs.items() for image, up in uploads.items() if up.route in config.routes]


def markdown_table(results: list[Result]) -> str:
    """Per image and client count, each configuration's req/s (p50 / p99 ms), then its req/s over the reference's
    (``batching`` when measured, else the first configuration); a cell not measured shows a dash."""
    by_key = {(r.config, r.image, r.concurrency): r for r in results}
    configs = list(dict.fromkeys(r.config for r in results))
    reference = "batching" if "batching" in configs else configs[0]
    others = [c for c in configs if c != reference]
    lines = [
        "| image | clients | "
        + " | ".join(f"{c} req/s (p50 / p99 ms)" for c in configs)
        + "".join(f" | {c} / {reference}" for c in others)
        + " |",
        "|---|---:|" + "---:|" * (len(configs) + len(others)),
    ]
    for image in dict.fromkeys(r.image for r in results):
        for c in CONCURRENCIES:
            cells = [by_key.get((config, image, c)) for config in configs]
            base = by_key.get((reference, image, c))
            measured = [f"{r.requests_per_s:,.0f} ({r.p50_ms:.1f} / {r.p99_ms:.1f})" if r else "–" for r in cells]
            ratios = [
                f"{r.requests_per_s / base.requests_per_s:.2f}x" if r and base else "–"
                for r in (by_key.get((config, image, c)) for config in others)
            ]
            lines.append(f"| {image} | {c} | " + " | ".join(measured + ratios) + " |")
    errors = sum(r.errors for r in results)
    lines.append("")
    lines.append(f"Errors (non-2xx or socket) over all runs: {errors}.")
    return "\n".join(lines)


def _selected(names: list[str] | None, available: Mapping[str, object], what: str) -> list[str]:
    unknown = sorted(set(names or ()) - set(available))
    if unknown:
        raise SystemExit(f"unknown {what} {unknown}; choose from {list(available)}")
    return names or list(available)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=int, default=8, help="measured seconds per cell (after warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurements of every cell")
    parser.add_argument(
        "--configs", nargs="+", metavar="NAME", help=f"configurations to run (default all): {list(CONFIGS)}"
    )
    parser.add_argument("--images", nargs="+", metavar="NAME", help="uploads to send (default all)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    all_uploads = bench_uploads()
    configs = {name: CONFIGS[name] for name in _selected(args.configs, CONFIGS, "configurations")}
    uploads = {name: all_uploads[name] for name in _selected(args.images, all_uploads, "images")}
    cells = bench_cells(configs, uploads)
    expected_s = len(cells) * len(CONCURRENCIES) * args.rounds * (min(WARMUP_S, args.duration_s) + args.duration_s)
    logger.info(
        "%d cells x %d rounds: about %.0f minutes", len(cells) * len(CONCURRENCIES), args.rounds, expected_s / 60
    )
    rounds: dict[tuple[str, str, int], list[Result]] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as servers:
        bodies: dict[str, Path] = {}
        for name, upload in uploads.items():
            bodies[name] = Path(tmp) / f"{len(bodies)}.body"
            bodies[name].write_bytes(multipart(upload.data))
        urls: dict[str, str] = {}
        for name, config in configs.items():
            log_path = Path(tmp) / f"{config.module}.{len(urls)}.log"
            server = start_server(config.env, log_path, module=config.module, health_path=config.health_path)
            servers.callback(server.stop)
            urls[name] = server.url
        digit = multipart(all_uploads["28x28 digit"].data)
        for name, config in configs.items():
            wait_until_answers(f"{urls[name]}{config.routes['/predict']}", digit)
        for round_index in range(args.rounds):
            for name, image in cells:
                route = f"{urls[name]}{configs[name].routes[uploads[image].route]}"
                for concurrency in CONCURRENCIES:
                    result = measure(name, route, image, bodies[image], concurrency, args.duration_s)
                    rounds.setdefault((name, image, concurrency), []).append(result)
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
                "configs": {name: asdict(config) for name, config in configs.items()},
                "results": [asdict(r) for r in results],
                "every_round": [asdict(r) for cell in rounds.values() for r in cell],
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )
    (args.out / "bench.md").write_text(markdown_table(results) + "\n")
    logger.info("\n%s", markdown_table(results))


if __name__ == "__main__":
    main()
