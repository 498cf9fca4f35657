"""The benchmark's arithmetic: medians over rounds, and the table's ratios."""

from __future__ import annotations

from bench.run_bench import CONCURRENCIES, CONFIGS, Result, markdown_table, median_result


def _result(config: str, rps: float, p50: float = 10.0, p99: float = 20.0, errors: int = 0, c: int = 64) -> Result:
    return Result(config, "digit", c, requests_per_s=rps, p50_ms=p50, p99_ms=p99, errors=errors)


def test_a_cell_is_the_median_of_each_measure_and_the_sum_of_the_errors() -> None:
    rounds = [_result("batching", 300, 9, 30, 1), _result("batching", 100, 11, 10), _result("batching", 200, 10, 20, 2)]
    assert median_result(rounds) == _result("batching", 200, 10, 20, 3)


def test_the_table_divides_batching_by_the_other_configurations() -> None:
    per_config = dict(zip(CONFIGS, (300.0, 150.0, 600.0), strict=True))
    results = [_result(config, rps, c=c) for config, rps in per_config.items() for c in CONCURRENCIES]
    table = markdown_table(results)
    row = next(line for line in table.splitlines() if line.startswith("| digit | 64 |"))
    assert row.endswith("| 2.00x | 50% |")
    assert "Errors (non-2xx or socket) over all runs: 0." in table
