"""Latency of ``POST /detect`` with one client at a time: a 640x480 camera frame (JPEG) with three numbers.

Starts the service with the committed models on loopback (one torch thread, as deployed per core), sends the
frame ``--requests`` times in a row after a warm-up, and writes the round trip's and the server's own ``total_ms``
median and 90th percentile to ``bench/results/detect_latency.json``, with the machine's load average before and
after (other work on the machine shows up in the figures).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
from pathlib import Path

import httpx
import numpy as np

from bench.read_latency import SERVICE_ENV, latency_arguments, measure
from evaluation.pages import compose_page
from harness.server import REPO_ROOT, running_server
from training.data import default_data_dir, load_mnist
from training.synthetic_lines import crop_glyph

logger = logging.getLogger("bench.detect_latency")

OUT = REPO_ROOT / "bench" / "results" / "detect_latency.json"
# The seeded frame: three numbers of MNIST test digits and a printed word on ruled, shaded paper.
FRAME_SEED = 23
FRAME_SIZE = (640, 480)


def frame() -> tuple[bytes, list[str]]:
    images, labels = load_mnist(default_data_dir(), "test")
    glyphs = [crop_glyph(image) for image in images[:300].numpy()]
    page = compose_page(
        glyphs, labels[:300].tolist(), np.random.default_rng(FRAME_SEED), size=FRAME_SIZE, number_count=3, word_count=1
    )
    return page.data, [number.text for number in page.numbers]


def main() -> None:
    args = latency_arguments(__doc__ or "", OUT)
    data, truth = frame()
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores",
        "frame": {"size": list(FRAME_SIZE), "bytes": len(data), "numbers": truth},
        "load_average_before": list(os.getloadavg()),
    }
    with tempfile.TemporaryDirectory() as tmp, running_server(SERVICE_ENV, Path(tmp) / "service.log") as server:
        answer = httpx.post(f"{server.url}/detect", files={"file": ("frame.jpg", data)}, timeout=30.0).json()
        results["numbers_read"] = [
            {"text": n["text"], "confidence": round(n["confidence"], 2), "box": n["box"]} for n in answer["numbers"]
        ]
        results["candidates"] = answer["candidates"]
        results["detect"] = measure(server.url, data, args.requests, route="/detect")
        logger.info("detect: %s", results["detect"])
    results["load_average_after"] = list(os.getloadavg())
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
