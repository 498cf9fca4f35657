"""Real replicas of the service on loopback ports, shared by the deployment tests that need a running service."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.server import start_server
from tests.support.replicas import REPLICA_COUNT, REPLICA_ENV, Replicas


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
