"""TorchServe with its server-side batching: a custom handler for the same pipeline, one Python worker per core.

TorchServe's Java front end takes ``POST /predictions/digits`` (multipart ``file``), gathers up to
``MAX_BATCH_SIZE`` requests for at most ``MAX_BATCH_DELAY_MS`` and hands them to a worker's
:meth:`DigitsHandler.handle`, which prepares each upload with :class:`bench.peers.pipeline.DigitPipeline` and runs
every model once on the batch; an unusable image gets its own 400 without failing the others. ``GET /ping`` is
healthy once the workers have loaded. ``python -m bench.peers.torchserve_handler`` archives the handler (this file;
the models come from the store, not the archive), writes a ``config.properties`` and runs
``torchserve --foreground`` on ``DIGITS_HOST:DIGITS_PORT`` until it is sent SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from bench.peers.pipeline import DigitAnswer, DigitPipeline
from harness.server import REPO_ROOT, free_port
from imaging.errors import ImagingError
from service.config import get_settings

MODEL_NAME = "digits"
# The service's own batch bound and wait (DIGITS_MAX_BATCH_SIZE, DIGITS_MAX_BATCH_WAIT_MS defaults).
MAX_BATCH_SIZE = 16
MAX_BATCH_DELAY_MS = 2
LOG_CONFIG = Path(__file__).with_name("torchserve-log4j2.xml")
_BAD_IMAGE = "The upload is not a usable image of a digit; send a PNG or JPEG of one digit."


class DigitsHandler:
    """TorchServe's custom-handler protocol: ``initialize(context)`` once per worker, then ``handle`` per batch."""

    def __init__(self, pipeline: DigitPipeline | None = None) -> None:
        """TorchServe passes no pipeline (:meth:`initialize` loads it); a test may pass its own."""
        self._pipeline = pipeline

    def initialize(self, _context: Any) -> None:
        # One thread per worker process: the workers themselves use the cores.
        torch.set_num_threads(1)
        self._pipeline = DigitPipeline.from_settings()

    def handle(self, requests: list[dict[str, Any]], context: Any) -> list[DigitAnswer | str]:
        """One answer per request of the batch, in order; a request whose image is unusable gets a 400."""
        if self._pipeline is None:
            raise RuntimeError("handle() before initialize()")
        images, prepared = [], []
        answers: list[DigitAnswer | str] = [_BAD_IMAGE] * len(requests)
        for index, request in enumerate(requests):
            data = request.get("file") or request.get("body") or b""
            try:
                images.append(self._pipeline.prepare(bytes(data)))
            except ImagingError:
                context.set_response_status(400, _BAD_IMAGE, idx=index)
                continue
            prepared.append(index)
        if images:
            for index, answer in zip(prepared, self._pipeline.predict(images), strict=True):
                answers[index] = answer
        return answers


def _config(settings_host: str, settings_port: int, workers: int) -> str:
    model = {
        "1.0": {
            "defaultVersion": True,
            "marName": MODEL_NAME,
            "minWorkers": workers,
            "maxWorkers": workers,
            "batchSize": MAX_BATCH_SIZE,
            "maxBatchDelay": MAX_BATCH_DELAY_MS,
            "responseTimeout": 30,
        }
    }
    return (
        f"inference_address=http://{settings_host}:{settings_port}\n"
        f"management_address=http://127.0.0.1:{free_port()}\n"
        f"metrics_address=http://127.0.0.1:{free_port()}\n"
        # The gRPC endpoints are always started: free ports, so several servers can run side by side.
        f"grpc_inference_port={free_port()}\n"
        f"grpc_management_port={free_port()}\n"
        # No host metrics sampled in the background, as the service has none.
        "disable_system_metrics=true\n"
        # Loopback only, and nobody to hand a token to.
        "disable_token_authorization=true\n"
        f"load_models={MODEL_NAME}\n"
        f"models={json.dumps({MODEL_NAME: model})}\n"
    )


def main() -> None:
    settings = get_settings()
    bin_dir = str(Path(sys.executable).parent)
    with tempfile.TemporaryDirectory(prefix="torchserve-") as tmp:
        workdir = Path(tmp)
        store = workdir / "model-store"
        store.mkdir()
        # The workers import the archived copy of this file, which imports the pipeline from the repository;
        # TorchServe's pid file (which would refuse a second server) and any log files go to the work folder.
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TMPDIR": tmp, "LOG_LOCATION": tmp, "METRICS_LOCATION": tmp}
        archive = [f"{bin_dir}/torch-model-archiver", "--model-name", MODEL_NAME, "--version", "1.0"]
        archive += ["--handler", __file__, "--export-path", str(store), "--archive-format", "no-archive"]
        subprocess.run(archive, check=True, env=env)
        (workdir / "config.properties").write_text(_config(settings.host, settings.port, os.cpu_count() or 1))
        command = [f"{bin_dir}/torchserve", "--start", "--foreground", "--ncs", "--model-store", str(store)]
        command += ["--ts-config", str(workdir / "config.properties"), "--log-config", str(LOG_CONFIG)]
        # Its own process group, so that SIGTERM reaches the Java front end and its Python workers alike.
        server = subprocess.Popen(command, env=env, cwd=workdir, start_new_session=True)
        signal.signal(signal.SIGTERM, lambda _signum, _frame: os.killpg(server.pid, signal.SIGTERM))
        code = server.wait()
    sys.exit(code)


if __name__ == "__main__":
    main()
