"""The real thing: ``python -m service`` under uvicorn on a loopback port, from start-up to SIGTERM."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from contract import ModelStore
from harness.server import running_server
from service import __main__ as service_main
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


def test_server_options_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    captured: dict[str, object] = {}
    monkeypatch.setattr(service_main.uvicorn, "run", lambda app, **options: captured.update(options, app=app))
    monkeypatch.setenv("DIGITS_LIMIT_CONCURRENCY", "64")
    monkeypatch.setenv("DIGITS_BACKLOG", "128")
    monkeypatch.setenv("DIGITS_LOG_FORMAT", "json")
    service_main.get_settings.cache_clear()
    try:
        service_main.main()
    finally:
        service_main.get_settings.cache_clear()

    assert (captured["app"], captured["limit_concurrency"], captured["backlog"]) == ("service.main:create_app", 64, 128)
    log_config = captured["log_config"]
    assert isinstance(log_config, dict)
    assert log_config["formatters"]["access"]["()"] == "pythonjsonlogger.json.JsonFormatter"
