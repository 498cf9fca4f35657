"""BentoML with its adaptive batching: one service class, one worker process per core, each batching its requests.

``POST /predict`` takes the multipart ``file``; BentoML's dispatcher gathers concurrent requests into one call of
the batchable API, which prepares each upload with :class:`bench.peers.pipeline.DigitPipeline` and runs every model
once on the batch. A batchable API answers each request with its slice of the batch, so the answer is a one-item
list of the other peers' answer; an unusable image fails the batch it is in (400). ``GET /readyz`` is BentoML's
readiness probe. ``python -m bench.peers.bento_service`` replaces itself with ``bentoml serve`` on
``DIGITS_HOST:DIGITS_PORT``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import bentoml
import torch
from bentoml.exceptions import InvalidArgument

from bench.peers.pipeline import DigitAnswer, DigitPipeline
from harness.server import REPO_ROOT
from imaging.errors import ImagingError
from service.config import get_settings

# The service's own batch bound (DIGITS_MAX_BATCH_SIZE's default).
MAX_BATCH_SIZE = 16
# BentoML's latency goal: a request it expects to exceed it is refused with 503. Set to the benchmark's request
# timeout (wrk --timeout 10s) so the peer queues like the others rather than shedding load.
MAX_LATENCY_MS = 10_000


# No access log, as the service runs by default (DIGITS_ACCESS_LOG=false).
@bentoml.service(workers=os.cpu_count() or 1, traffic={"timeout": 30}, logging={"access": {"enabled": False}})
class Digits:
    def __init__(self) -> None:
        # One thread per worker process: the workers themselves use the cores.
        torch.set_num_threads(1)
        self._pipeline = DigitPipeline.from_settings()

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def predict(self, file: list[Path]) -> list[DigitAnswer]:
        """Each upload's models' answers and their ensemble, in order."""
        try:
            images = [self._pipeline.prepare(path.read_bytes()) for path in file]
        except ImagingError:
            raise InvalidArgument(
                "The upload is not a usable image of a digit; send a PNG or JPEG of one digit."
            ) from None
        return self._pipeline.predict(images)


def main() -> None:
    settings = get_settings()
    # No usage reports (the benchmark runs offline), and BentoML's home (its model and bento stores, unused here)
    # away from the user's.
    os.environ.update(BENTOML_DO_NOT_TRACK="true", BENTOML_HOME=str(Path(tempfile.gettempdir(), "digits-bentoml")))
    command = [sys.executable, "-m", "bentoml", "serve", "bench.peers.bento_service:Digits"]
    command += ["--host", settings.host, "--port", str(settings.port), "--working-dir", str(REPO_ROOT)]
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main()
