"""The byte budget: reservations grow up to the limit together, a refusal reserves nothing, release is certain."""

from __future__ import annotations

import pytest

from service.errors import MemoryBudgetError
from service.inflight import ByteBudget


def test_reservations_share_the_limit_and_a_refusal_takes_nothing() -> None:
    budget = ByteBudget(100)

    with budget.reserve() as first, budget.reserve() as second:
        first.ensure(60)
        first.ensure(40)  # never shrinks while held
        with pytest.raises(MemoryBudgetError):
            second.ensure(41)
        refused_held = second.bytes
        second.ensure(40)
        in_use = budget.in_use_bytes

    assert (first.bytes, refused_held, in_use) == (60, 0, 100)
    assert budget.in_use_bytes == 0


def test_a_reservation_is_returned_when_its_block_fails() -> None:
    budget = ByteBudget(100)

    with pytest.raises(RuntimeError), budget.reserve() as reservation:
        reservation.ensure(70)
        raise RuntimeError("the request failed")

    assert budget.in_use_bytes == 0


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ByteBudget(0)
