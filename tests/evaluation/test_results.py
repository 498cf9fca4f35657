"""The comparison's statistics against published values and hand-computed binomial tails."""

from __future__ import annotations

import pytest

from evaluation.results import mcnemar_exact, wilson_interval


def test_wilson_interval_matches_published_values() -> None:
    # 0 of 10 and 10 of 10 have the closed forms [0, z^2 / (n + z^2)] and its mirror; 50 of 100 is [40.38, 59.62] %.
    z2 = 1.959963984540054**2
    assert wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))
    assert wilson_interval(10, 10) == pytest.approx((10 / (10 + z2), 1.0))
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)


@pytest.mark.parametrize(
    ("only_first", "only_second", "p_value"),
    [
        (1, 6, 2 * (1 + 7) / 2**7),  # 0.125
        (6, 1, 0.125),
        (0, 10, 2 / 2**10),
        (2, 10, 2 * (1 + 12 + 66) / 2**12),  # 0.0386
        (5, 5, 1.0),
        (0, 0, 1.0),
    ],
)
def test_mcnemar_exact_matches_the_hand_computed_binomial_tail(
    only_first: int, only_second: int, p_value: float
) -> None:
    assert mcnemar_exact(only_first, only_second) == pytest.approx(p_value, rel=1e-12)
