"""Reliability fixtures: the service tests' tiny store and app, the committed models, MNIST digits, real servers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from harness.server import RunningServer, start_server
from tests.support.fixtures import *  # noqa: F403  (the service tests' fixtures)
from tests.support.servers import ServerFactory
from training.data import default_data_dir, load_mnist


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start real servers for the test (``serve(env)``); every one still running is stopped afterwards."""
    started: list[RunningServer] = []

    def _serve(env: Mapping[str, str]) -> RunningServer:
        server = start_server(env, tmp_path / f"server-{len(started)}.log")
        started.append(server)
        return server

    yield _serve
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def mnist_test() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """The official MNIST test digits (uint8, 28x28) and their labels."""
    digits, labels = load_mnist(default_data_dir(), "test")
    return digits.numpy(), labels.numpy()
