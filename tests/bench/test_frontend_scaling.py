"""The scaling benchmark's arithmetic, and its CPU split on a real server: the inference process's share is its own."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bench.frontend_scaling import Cell, cpu_split, median_cell, predicted_requests_per_s
from harness.server import running_server
from tests.support.uploads import draw_seven, png_bytes, upload


def _cell(rps: float, front_end_ms: float, inference_ms: float, errors: int = 0, ok_per_s: float = 0.0) -> Cell:
    return Cell("2 front ends", "digit", 64, rps, 10.0, 12.0, errors, ok_per_s, front_end_ms, inference_ms, 0.3)


def test_a_cell_is_the_median_of_each_measure_and_the_sum_of_the_errors() -> None:
    rounds = [_cell(300, 1.0, 0.2, 1, 290), _cell(100, 3.0, 0.1, 0, 100), _cell(200, 2.0, 0.3, 2, 150)]
    assert median_cell(rounds) == _cell(200, 2.0, 0.2, 3, 150)


def test_the_prediction_is_capped_by_the_inference_process() -> None:
    # 15 cores of front ends at 1 ms per request: 15,000 req/s; one inference process at 0.1 ms: 10,000 req/s.
    prediction = predicted_requests_per_s(_cell(0, front_end_ms=1.0, inference_ms=0.1), cores=16)
    assert prediction == pytest.approx({"front_end_bound": 15_000, "inference_bound": 10_000, "predicted": 10_000})


@pytest.mark.slow
def test_the_inference_process_cpu_is_told_apart_from_the_front_ends(tmp_path: Path) -> None:
    env = {"DIGITS_WORKERS": "1", "DIGITS_DEVICE": "cpu"}
    with running_server(env, tmp_path / "server.log") as server:
        total_before, engine_before = cpu_split(server)
        with httpx.Client() as client:
            for _ in range(40):
                response = client.post(f"{server.url}/predict", files=upload(png_bytes(draw_seven())), timeout=10)
                assert response.status_code == 200
        total_after, engine_after = cpu_split(server)

    assert engine_after > engine_before
    assert total_after - total_before > engine_after - engine_before
