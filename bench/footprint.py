"""What one replica uses: memory (proportional set size, shared pages counted once) and CPU cores of a real server
and the processes below it (front end, inference process, preprocessing workers), idle and under three loads
(canvas uploads to ``/predict``, batches of 64 through the Open Inference Protocol, phone photos). The Kubernetes
manifests' resource requests and limits are sized from it.

Writes ``bench/results/footprint.json``. Run with ``python -m bench.footprint`` (about 40 s). The load generator
shares the machine, so the CPU figures are what the server used while the machine was saturated, not its ceiling.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
import tritonclient.http as triton

from bench.run_bench import RESULTS_DIR, bench_images
from bench.wrk import failures, multipart, run_wrk
from harness.images import photo_of_paper
from harness.processes import cpu_seconds, pss_mb
from harness.server import REPO_ROOT, start_server

logger = logging.getLogger("bench")

# One replica as deployed (deploy/kubernetes/base/deployment.yaml): the committed models on the CPU, one torch
# thread, two preprocessing workers.
SERVER_ENV = {
    "DIGITS_MODEL_STORE_DIR": str(REPO_ROOT / "model_store"),
    "DIGITS_DEVICE": "cpu",
    "DIGITS_TORCH_THREADS": "1",
    "DIGITS_PREPROCESS_WORKERS": "2",
}
DURATION_S = 8.0
SAMPLE_PERIOD_S = 0.1
OIP_BATCH = 64


@dataclass
class Phase:
    name: str
    clients: int
    requests: int
    failures: int
    requests_per_s: float
    cpu_cores: float
    # CPU time per answered request: unlike cores, it hardly depends on what else the machine runs.
    cpu_ms_per_request: float
    peak_pss_mb: float


def _phone_jpeg() -> bytes:
    buffer = io.BytesIO()
    photo_of_paper((4000, 3000)).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _oip_body() -> tuple[bytes, dict[str, str]]:
    pixels = np.random.default_rng(0).random((OIP_BATCH, 1, 28, 28), dtype=np.float32)
    tensor = triton.InferInput("input__0", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    body, json_size = triton.InferenceServerClient.generate_request_body([tensor])
    return body, {"Inference-Header-Content-Length": str(json_size)}


def _httpx_clients(clients: int, send: Callable[[httpx.Client], int]) -> Callable[[], tuple[int, int]]:
    """A load of ``clients`` threads calling ``send`` for ``DURATION_S``: (requests, failures)."""

    def run() -> tuple[int, int]:
        deadline = time.monotonic() + DURATION_S
        statuses: list[int] = []

        def client() -> None:
            with httpx.Client(timeout=30) as http:
                while time.monotonic() < deadline:
                    statuses.append(send(http))

        with ThreadPoolExecutor(clients) as pool:
            for future in [pool.submit(client) for _ in range(clients)]:
                future.result()
        return len(statuses), sum(status != 200 for status in statuses)

    return run


def _wrk_clients(url: str, body_file: Path, clients: int) -> Callable[[], tuple[int, int]]:
    """The benchmark's load generator (wrk, in C): a saturating load the Python clients could not offer."""

    def run() -> tuple[int, int]:
        summary = run_wrk(url, body_file, clients, int(DURATION_S))
        return summary["requests"], failures(summary)

    return run


def _measure(pid: int, name: str, clients: int, load: Callable[[], tuple[int, int]]) -> Phase:
    """Run ``load`` while memory is sampled; CPU time of the server's processes from /proc."""
    peak = pss_mb(pid)
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(SAMPLE_PERIOD_S):
            peak = max(peak, pss_mb(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    cpu_before, started = cpu_seconds(pid), time.monotonic()
    requests, failures = load()
    wall_s, cpu_s = time.monotonic() - started, cpu_seconds(pid) - cpu_before
    stop.set()
    sampler.join()
    phase = Phase(name, clients, requests, failures, requests / wall_s, cpu_s / wall_s, cpu_s / requests * 1e3, peak)
    logger.info("%s", phase)
    return phase


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    phone = _phone_jpeg()
    oip_body, oip_headers = _oip_body()
    with tempfile.TemporaryDirectory() as folder:
        canvas_body = Path(folder) / "canvas.multipart"
        canvas_body.write_bytes(multipart(bench_images()["280x280 canvas"]))
        server = start_server(SERVER_ENV, Path(folder) / "server.log")
        try:
            pid, url = server.process.pid, server.url
            idle_mb = pss_mb(pid)
            phases = [
                # Two clients: a request of 64 rows takes 64 places in the batcher's queue (128 by default).
                _measure(
                    pid,
                    f"batch of {OIP_BATCH} to /v2/models/ensemble/infer (binary)",
                    2,
                    _httpx_clients(
                        2,
                        lambda http: (
                            http.post(
                                f"{url}/v2/models/ensemble/infer", content=oip_body, headers=oip_headers
                            ).status_code
                        ),
                    ),
                ),
                _measure(
                    pid,
                    "4000x3000 phone JPEG to /predict",
                    4,
                    _httpx_clients(
                        4, lambda http: http.post(f"{url}/predict", files={"file": ("p.jpg", phone)}).status_code
                    ),
                ),
                # Last: wrk stops with requests still queued, which would refuse the next phase's first ones.
                _measure(pid, "280x280 canvas to /predict", 64, _wrk_clients(f"{url}/predict", canvas_body, 64)),
            ]
            after_mb = pss_mb(pid)
        finally:
            server.stop()
    results = {
        # Other work on the machine lowers the cores a phase could use, not the CPU time per request much.
        "machine": {"cpu_count": os.cpu_count(), "load_average_1min_after": os.getloadavg()[0]},
        "settings": {key: value for key, value in SERVER_ENV.items() if key != "DIGITS_MODEL_STORE_DIR"},
        "duration_s": DURATION_S,
        "idle_pss_mb": idle_mb,
        "after_load_pss_mb": after_mb,
        "phases": [asdict(phase) for phase in phases],
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "footprint.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
