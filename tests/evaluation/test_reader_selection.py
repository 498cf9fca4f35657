"""Choosing a reader version on fresh validation lines: the comparison's counts, and a real run on the store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evaluation.reader_selection import compare, main
from harness.server import REPO_ROOT
from training.reading import Line


def _line(text: str, spacing: str) -> Line:
    return Line(np.zeros((32, 8), dtype=np.float32), text, (spacing,) * (len(text) - 1))


def test_comparison_counts_the_lines_only_one_version_reads() -> None:
    lines = [_line("12", "apart"), _line("345", "touching"), _line("67", "touching")]
    readings = {5: ["12", "34", "67"], 6: ["12", "345", "6"]}

    result = compare(lines, readings)

    assert result["newest"] == 6
    assert result["versions"]["5"]["exact_match"] == 2 / 3
    assert result["versions"]["6"]["touching"]["exact_match"] == 1 / 2
    assert result["versions"]["6"]["apart"]["exact_match"] == 1.0
    assert result["against_newest"]["5"] == {"only_newest_right": 1, "only_older_right": 1, "mcnemar_p": 1.0}


def test_committed_readers_are_compared_on_held_out_training_digits(tmp_path: Path) -> None:
    out = tmp_path / "selection.json"

    assert (
        main(["--store", str(REPO_ROOT / "model_store"), "--versions", "3", "5", "--lines", "24", "--out", str(out)])
        == 0
    )

    result = json.loads(out.read_text())
    assert set(result["versions"]) == {"3", "5"} and result["newest"] == 5
    for row in result["versions"].values():
        assert row["lines"] == 24
        # Both read most of these lines: a broken loader or decoder reads none.
        assert row["exact_match"] >= 0.5
    discordant = result["against_newest"]["3"]
    assert 0 <= discordant["mcnemar_p"] <= 1
