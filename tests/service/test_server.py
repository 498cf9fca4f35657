"""The real thing: ``python -m service`` under uvicorn on a loopback port, from start-up to SIGTERM."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from contract import ModelStore
from harness.server import running_server
from tests.support.uploads import upload


@pytest.mark.slow
# harness/server.py leaves its copy of the log file handle to the garbage collector.
def test_server_answers_over_http_and_shuts_down_cleanly(store: ModelStore, tmp_path: Path, digit_png: bytes) -> None:
    env = {
        "DIGITS_MODEL_STORE_DIR": str(store.root),
        "DIGITS_DEVICE": "cpu",
        "DIGITS_TORCH_THREADS": "1",
        "DIGITS_LOG_LEVEL": "info",
    }
    log_path = tmp_path / "server.log"

    with running_server(env, log_path) as server:
        prediction = httpx.post(f"{server.url}/predict", files=upload(digit_png), timeout=10.0)
        metrics = httpx.get(f"{server.url}/metrics", timeout=10.0)
        exit_code = server.stop(signal.SIGTERM)

    assert prediction.status_code == 200
    assert [p["model"] for p in prediction.json()["predictions"]] == ["cnn", "lenet5", "mlp"]
    assert 'route="/predict",status="200"' in metrics.text
    # uvicorn re-raises the signal once it has shut down gracefully, as a process killed by it would report.
    assert exit_code == -signal.SIGTERM
    log = server.log()
    assert "serving on cpu: cnn v1, lenet5 v1, mlp v1" in log
    assert "stopped: every accepted request was answered" in log
