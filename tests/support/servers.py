"""Settings and environments for tests that start real service processes (see :mod:`harness.server`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from bench.reliability_report import FIGURES_DIR_VARIABLE
from harness.server import REPO_ROOT, RunningServer
from service.config import Settings

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
