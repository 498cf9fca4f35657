"""The real thing: ``python -m service`` (its supervisor, front ends and inference process) on a loopback port, from
start-up to SIGTERM, with its processes killed one by one."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn

from contract import ModelStore
from harness.server import RunningServer, free_port, running_server
from service import __main__ as service_entry
from service import supervisor as service_main
from tests.support.servers import clean_settings, server_env
from tests.support.uploads import upload

ENGINE_READY = re.compile(r"inference process (\d+) ready")
WORKER_STARTED = re.compile(r"Started server process \[(\d+)\]")
RESTART_TIMEOUT_S = 60.0


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
    assert exit_code == 0
    log = server.log()
    assert "serving on cpu: cnn v1, lenet5 v1, mlp v1" in log
    assert "stopped: every accepted request was answered" in log
    assert "inference process stopped: every queued item was answered" in log
    assert not any(Path(f"/proc/{pid}").exists() for pid in logged_pids(ENGINE_READY, log))


def logged_pids(pattern: re.Pattern[str], log: str) -> list[int]:
    return [int(pid) for pid in pattern.findall(log)]


def wait_for_log(server: RunningServer, pattern: re.Pattern[str], count: int) -> list[int]:
    deadline = time.monotonic() + RESTART_TIMEOUT_S
    while len(pids := logged_pids(pattern, server.log())) < count:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    return pids


def post_digit(server: RunningServer, digit_png: bytes) -> httpx.Response:
    return httpx.post(f"{server.url}/predict", files=upload(digit_png), timeout=10.0)


@pytest.mark.slow
def test_front_ends_share_one_inference_process_and_one_set_of_metrics(
    store: ModelStore, tmp_path: Path, digit_png: bytes
) -> None:
    with running_server(server_env(store.root, workers=2), tmp_path / "server.log") as server:
        wait_for_log(server, WORKER_STARTED, 2)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: post_digit(server, digit_png), range(24)))
        scrapes = [httpx.get(f"{server.url}/metrics", timeout=10.0).text for _ in range(4)]
        engines = logged_pids(ENGINE_READY, server.log())

    assert [answer.status_code for answer in answers] == [200] * 24
    assert len(engines) == 1
    # Whichever front end answers the scrape, it counts every request and every batch of both.
    for scrape in scrapes:
        assert 'digits_http_requests_total{method="POST",route="/predict",status="200"} 24.0' in scrape
        assert "digits_batch_size_sum 24.0" in scrape


@pytest.mark.slow
def test_a_killed_inference_process_fails_requests_with_503_until_it_is_started_again(
    store: ModelStore, tmp_path: Path, digit_png: bytes
) -> None:
    with running_server(server_env(store.root, workers=1), tmp_path / "server.log") as server:
        [engine] = logged_pids(ENGINE_READY, server.log())
        os.kill(engine, signal.SIGKILL)
        answers = [post_digit(server, digit_png)]
        deadline = time.monotonic() + RESTART_TIMEOUT_S
        while answers[-1].status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
            answers.append(post_digit(server, digit_png))
        log = server.log()

    refused = answers[0]
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert "inference process is restarting" in refused.json()["detail"]
    assert {answer.status_code for answer in answers[:-1]} == {503}
    assert answers[-1].status_code == 200
    assert "the inference process exited with code -9; starting it again" in log
    assert len(logged_pids(ENGINE_READY, log)) == 2


@pytest.mark.slow
def test_a_killed_front_end_is_replaced_while_the_other_serves(
    store: ModelStore, tmp_path: Path, digit_png: bytes
) -> None:
    with running_server(server_env(store.root, workers=2), tmp_path / "server.log") as server:
        first, _second = wait_for_log(server, WORKER_STARTED, 2)
        os.kill(first, signal.SIGKILL)
        answers = [post_digit(server, digit_png) for _ in range(10)]
        replaced = wait_for_log(server, WORKER_STARTED, 3)
        after = post_digit(server, digit_png)

    assert [answer.status_code for answer in answers] == [200] * 10
    assert len(set(replaced)) == 3
    assert after.status_code == 200


def test_server_options_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    configs: list[uvicorn.Config] = []

    class RecordingServer:
        def __init__(self, config: uvicorn.Config) -> None:
            configs.append(config)

        def run(self) -> None:
            pass

    monkeypatch.setattr(service_main.uvicorn, "Server", RecordingServer)
    for name, value in {"WORKERS": "1", "ENGINE": "embedded", "LIMIT_CONCURRENCY": "64", "BACKLOG": "128"}.items():
        monkeypatch.setenv(f"DIGITS_{name}", value)
    monkeypatch.setenv("DIGITS_LOG_FORMAT", "json")
    service_main.get_settings.cache_clear()
    try:
        service_entry.main()
    finally:
        service_main.get_settings.cache_clear()

    [config] = configs
    assert (config.app, config.limit_concurrency, config.backlog, config.workers) == (
        "service.main:create_app",
        64,
        128,
        1,
    )
    assert isinstance(config.log_config, dict)
    assert config.log_config["formatters"]["access"]["()"] == "pythonjsonlogger.json.JsonFormatter"


def test_front_ends_listen_on_a_socket_that_says_tcp(monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncio turns Nagle's algorithm off only on connections of a socket whose protocol is TCP; with it on, a
    lone request's answer waited about 40 ms for the client's delayed ACK."""
    listeners: list[socket.socket] = []
    monkeypatch.setattr(service_main._FrontEnds, "run", lambda self: listeners.extend(self.sockets))
    settings = clean_settings(port=free_port(), workers=2, engine="embedded")

    service_main._run_uvicorn("service.main:create_app", settings, in_workers=False)

    [listener] = listeners
    assert (listener.family, listener.proto) == (socket.AF_INET, socket.IPPROTO_TCP)
    listener.close()
