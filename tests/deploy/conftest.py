"""Real replicas of the service on loopback ports, shared by the deployment tests that need a running service."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.files import deployed_app_environment
from tests.support.server import REPO_ROOT, RunningServer, start_server

REPLICA_COUNT = 3
ADMIN_TOKEN = "deploy-test-admin-token"
# The committed models and the deployed upload limit; one intra-op thread each, as three replicas share a small
# machine with the rest of the suite.
REPLICA_ENV = {
    "DIGITS_MODEL_STORE_DIR": str(REPO_ROOT / "model_store"),
    "DIGITS_MAX_UPLOAD_BYTES": deployed_app_environment()["DIGITS_MAX_UPLOAD_BYTES"],
    "DIGITS_DEVICE": "cpu",
    "DIGITS_TORCH_THREADS": "1",
    "DIGITS_PREPROCESS_WORKERS": "1",
    "DIGITS_LOG_FORMAT": deployed_app_environment()["DIGITS_LOG_FORMAT"],
    # Every request logged, so a test can follow one from the balancer's log into the replica's.
    "DIGITS_ACCESS_LOG": "true",
    "DIGITS_ADMIN_TOKEN": ADMIN_TOKEN,
}


@dataclass
class Replicas:
    """The running replicas; ``restart`` brings one back on its old port, as a restarted container would be."""

    servers: list[RunningServer]
    log_dir: Path

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{server.port}" for server in self.servers]

    def restart(self, index: int) -> RunningServer:
        old = self.servers[index]
        old.stop()
        self.servers[index] = start_server(REPLICA_ENV, old.log_path, port=old.port)
        return self.servers[index]


@pytest.fixture(scope="session")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    log_dir = tmp_path_factory.mktemp("replicas")
    # In parallel: most of a replica's start is importing torch and warming up models, single-threaded.
    with ThreadPoolExecutor(max_workers=REPLICA_COUNT) as pool:
        futures = [
            pool.submit(start_server, REPLICA_ENV, log_dir / f"replica-{index}.log") for index in range(REPLICA_COUNT)
        ]
    started = [future.result() for future in futures if future.exception() is None]
    failures = [error for future in futures if (error := future.exception()) is not None]
    if failures:
        for server in started:
            server.stop()
        raise failures[0]
    running = Replicas(servers=started, log_dir=log_dir)
    yield running
    for server in running.servers:
        server.stop()
