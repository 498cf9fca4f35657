"""The benchmark's matrix and arithmetic: which uploads each server gets, medians over rounds, the table's ratios."""

from __future__ import annotations

from bench.run_bench import CONCURRENCIES, CONFIGS, Result, Upload, bench_cells, markdown_table, median_result


def _result(config: str, rps: float, p50: float = 10.0, p99: float = 20.0, errors: int = 0, c: int = 64) -> Result:
    return Result(config, "digit", c, requests_per_s=rps, p50_ms=p50, p99_ms=p99, errors=errors)


def test_a_cell_is_the_median_of_each_measure_and_the_sum_of_the_errors() -> None:
    rounds = [_result("batching", 300, 9, 30, 1), _result("batching", 100, 11, 10), _result("batching", 200, 10, 20, 2)]
    assert median_result(rounds) == _result("batching", 200, 10, 20, 3)


def test_the_table_divides_every_configuration_by_batching() -> None:
    per_config = {"no batching": 150.0, "batching": 300.0, "bare endpoint": 600.0}
    results = [_result(config, rps, c=c) for config, rps in per_config.items() for c in CONCURRENCIES]
    table = markdown_table(results)
    row = next(line for line in table.splitlines() if line.startswith("| digit | 64 |"))
    assert row == "| digit | 64 | 150 (10.0 / 20.0) | 300 (10.0 / 20.0) | 600 (10.0 / 20.0) | 0.50x | 2.00x |"
    assert "| no batching / batching | bare endpoint / batching |" in table
    assert "Errors (non-2xx or socket) over all runs: 0." in table


def test_a_cell_not_measured_shows_a_dash() -> None:
    results = [_result("batching", 300, c=c) for c in CONCURRENCIES] + [_result("gunicorn + Flask", 100)]
    row = next(line for line in markdown_table(results).splitlines() if line.startswith("| digit | 8 |"))
    assert row.endswith("| 300 (10.0 / 20.0) | – | – |")


def test_peers_get_only_the_digit_uploads() -> None:
    uploads = {"digit": Upload("/predict", b""), "line": Upload("/read", b"")}
    configs = {name: CONFIGS[name] for name in ("batching", "gunicorn + Flask")}
    assert bench_cells(configs, uploads) == [("batching", "digit"), ("batching", "line"), ("gunicorn + Flask", "digit")]
