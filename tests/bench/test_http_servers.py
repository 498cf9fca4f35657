"""The HTTP server comparison runs every server for real (``--quick``) and records what each answered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.http_servers import QUICK_CONCURRENCIES, SERVERS, Result, main, markdown_tables, median_result

pytestmark = pytest.mark.slow


def test_quick_run_measures_every_server_answering_the_service(tmp_path: Path) -> None:
    main(["--quick", "--out", str(tmp_path)])

    output = json.loads((tmp_path / "http_servers.json").read_text())
    results = [Result(**r) for r in output["results"]]
    assert {(r.server, r.concurrency) for r in results} == {(s, c) for s in SERVERS for c in QUICK_CONCURRENCIES}
    for result in results:
        # Every answer is a 2xx or, under overload, the service's 503; no socket errors, no other statuses.
        assert (result.errors, result.non_2xx) == (0, 0), result
        assert result.requests > 0 and result.cpu_ms_per_request > 0, result
        assert 0 < result.p50_ms <= result.p99_ms, result
        if result.concurrency < 64:
            assert (result.status_503, result.ok_per_s > 0) == (0, True), result
    assert output["packages"]["granian"] and output["servers"]["granian"][-1] == "APP"
    table = (tmp_path / "http_servers.md").read_text()
    assert all(f"| service | 28x28 digit | {c} |" in table for c in QUICK_CONCURRENCIES)


def _result(server: str, ok_per_s: float, p50: float = 10.0, p99: float = 20.0, status_503: int = 0) -> Result:
    return Result(
        app="service",
        server=server,
        image="digit",
        concurrency=256,
        requests=100,
        ok_per_s=ok_per_s,
        p50_ms=p50,
        p99_ms=p99,
        p99_over_p50=p99 / p50,
        status_503=status_503,
        non_2xx=0,
        errors=0,
        cpu_ms_per_request=1.0,
    )


def test_a_cell_is_the_median_of_each_rate_and_latency_and_the_sum_of_the_counts() -> None:
    rounds = [_result("granian", 300, 9, 90, 5), _result("granian", 100, 11, 10), _result("granian", 200, 10, 40, 1)]
    cell = median_result(rounds)
    assert (cell.ok_per_s, cell.p50_ms, cell.p99_ms, cell.p99_over_p50) == (200, 10, 40, 4.0)
    assert (cell.requests, cell.status_503) == (300, 6)


def test_the_table_divides_by_uvicorn_h11_and_marks_a_baseline_without_2xx() -> None:
    table = markdown_tables([_result("uvicorn h11", 0, status_503=100), _result("granian", 50, status_503=50)])
    row = next(line for line in table.splitlines() if line.startswith("| service | digit | 256 |"))
    assert row == "| service | digit | 256 | 0 (10.0 / 20.0), 100% 503 | 50 (10.0 / 20.0), 50% 503 | - |"
