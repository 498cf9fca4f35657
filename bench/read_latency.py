"""Latency of ``POST /read`` with one client at a time: a 5-digit canvas drawing and a 7-digit phone photo.

Starts the service with the committed models on loopback (one torch thread, as deployed per core), sends each
upload ``--requests`` times in a row after a warm-up, and writes the round trip's and the server's own
``total_ms`` median and 90th percentile to ``bench/results/read_latency.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from evaluation.line_images import render_canvas, render_photo
from harness.server import REPO_ROOT, running_server
from training.data import default_data_dir, load_mnist
from training.synthetic_lines import LineVariation, compose_line, crop_glyph

logger = logging.getLogger("bench.read_latency")

OUT = REPO_ROOT / "bench" / "results" / "read_latency.json"
_WARMUP_REQUESTS = 10


def uploads() -> dict[str, bytes]:
    """The two numbers: MNIST test digits 0-4 drawn on a canvas (apart) and 10-16 photographed (touching)."""
    images, _labels = load_mnist(default_data_dir(), "test")
    glyphs = [crop_glyph(image) for image in images[:20].numpy()]
    rng = np.random.default_rng(0)
    canvas = compose_line(glyphs[:5], ["apart"] * 4, rng, LineVariation())
    photo = compose_line(glyphs[10:17], ["touching"] * 6, rng, LineVariation())
    return {"5-digit canvas": render_canvas(canvas, rng), "7-digit photo": render_photo(photo, rng)}


def _percentile(values: list[float], fraction: float) -> float:
    return float(np.quantile(np.asarray(values), fraction))


def measure(url: str, data: bytes, requests: int, route: str = "/read") -> dict[str, float]:
    """``requests`` uploads of ``data`` to ``route`` one after another, after a warm-up: the round trip's and the
    server's own ``total_ms`` median and 90th percentile."""
    round_trips, server = [], []
    with httpx.Client(timeout=30.0) as client:
        for index in range(_WARMUP_REQUESTS + requests):
            started = time.perf_counter()
            response = client.post(f"{url}{route}", files={"file": ("upload", data)})
            elapsed_ms = (time.perf_counter() - started) * 1e3
            response.raise_for_status()
            if index >= _WARMUP_REQUESTS:
                round_trips.append(elapsed_ms)
                server.append(float(response.json()["timings_ms"]["total_ms"]))
    return {
        "requests": requests,
        "round_trip_median_ms": statistics.median(round_trips),
        "round_trip_p90_ms": _percentile(round_trips, 0.9),
        "server_median_ms": statistics.median(server),
        "server_p90_ms": _percentile(server, 0.9),
    }


def latency_arguments(description: str, default_out: Path) -> argparse.Namespace:
    """The latency scripts' command line (``--requests``, ``--out``), with logging set up."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return args


# The committed models, one torch thread (as deployed, one per core).
SERVICE_ENV = {"DIGITS_MODEL_STORE_DIR": str(REPO_ROOT / "model_store"), "DIGITS_TORCH_THREADS": "1"}


def main() -> None:
    args = latency_arguments(__doc__ or "", OUT)
    results: dict[str, object] = {"machine": f"{platform.machine()}, {platform.processor() or 'cpu'}"}
    with tempfile.TemporaryDirectory() as tmp, running_server(SERVICE_ENV, Path(tmp) / "service.log") as server:
        for name, data in uploads().items():
            results[name] = measure(server.url, data, args.requests)
            logger.info("%s: %s", name, results[name])
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
