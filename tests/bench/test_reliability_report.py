"""The reliability report collects every measuring test's figures and refuses to write a partial report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.reliability_report import MEASURING_TESTS, collect_figures


def test_figures_of_every_measuring_test_are_collected_by_name(tmp_path: Path) -> None:
    for index, name in enumerate(MEASURING_TESTS):
        (tmp_path / f"{name}.json").write_text(json.dumps({"value": index}))

    figures = collect_figures(tmp_path)

    assert figures == {name: {"value": index} for index, name in enumerate(MEASURING_TESTS)}


def test_a_missing_test_is_named(tmp_path: Path) -> None:
    (tmp_path / "overload.json").write_text("{}")

    with pytest.raises(
        RuntimeError, match="no figures recorded by: animated_gif, rollout, schema_fuzz, shutdown, slow_uploads"
    ):
        collect_figures(tmp_path)
