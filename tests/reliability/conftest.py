"""Reliability fixtures: the service tests' tiny store and app, the committed models, MNIST digits, real servers."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from bench.reliability_report import FIGURES_DIR_VARIABLE
from service.config import Settings
from tests.service.conftest import (  # noqa: F401  (fixtures shared with the service tests)
    _no_digits_environment,
    app,
    client,
    digit_png,
    pristine_store,
    settings,
    store,
)
from tests.support.server import REPO_ROOT, RunningServer, start_server
from training.data import default_data_dir, load_mnist

COMMITTED_STORE = REPO_ROOT / "model_store"

ServerFactory = Callable[[Mapping[str, str]], RunningServer]


def record_figures(name: str, figures: Mapping[str, object]) -> None:
    """Write a test's measured figures for ``python -m bench.reliability_report``; nothing in a plain test run."""
    target = os.environ.get(FIGURES_DIR_VARIABLE)
    if target:
        Path(target, f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


def clean_settings(**fields: object) -> Settings:
    """``Settings`` from ``fields`` alone, for fixtures wider than a test (the autouse cleaner has not run yet)."""
    with pytest.MonkeyPatch.context() as patch:
        for key in [key for key in os.environ if key.upper().startswith("DIGITS_")]:
            patch.delenv(key)
        return Settings(**fields)  # type: ignore[arg-type]


def server_env(store_root: Path, **overrides: object) -> dict[str, str]:
    """``DIGITS_*`` variables for a CPU server on ``store_root`` with one torch thread, plus ``overrides``."""
    env = {"DIGITS_MODEL_STORE_DIR": str(store_root), "DIGITS_DEVICE": "cpu", "DIGITS_TORCH_THREADS": "1"}
    env.update({f"DIGITS_{key.upper()}": str(value) for key, value in overrides.items()})
    return env


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
