"""The byte budget of uploads in flight: bodies being read plus uploads waiting for, or in, decoding.

A request reserves its declared ``Content-Length`` before one byte of its body is read, or, for a chunked body,
each chunk's bytes as they arrive; a reservation that would take the total past ``limit_bytes`` raises
:class:`MemoryBudgetError` (503 with ``Retry-After``) and reserves nothing. The reservation is returned when the
request leaves the decoding stage, so the memory that uploads can pin in the server and its workers is bounded
by bytes, whatever the number of clients. Used from the event loop only, hence no lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from service.errors import MemoryBudgetError


class Reservation:
    """One request's share of the budget; grows as its body turns out larger, never shrinks until released."""

    def __init__(self, budget: ByteBudget) -> None:
        self._budget = budget
        self.bytes = 0

    def ensure(self, total_bytes: int) -> None:
        """Hold at least ``total_bytes``; :class:`MemoryBudgetError` if the budget cannot cover the increase."""
        extra = total_bytes - self.bytes
        if extra <= 0:
            return
        if self._budget.in_use_bytes + extra > self._budget.limit_bytes:
            raise MemoryBudgetError()
        self._budget.in_use_bytes += extra
        self.bytes = total_bytes


class ByteBudget:
    """At most ``limit_bytes`` reserved by all requests together (see the module docstring)."""

    def __init__(self, limit_bytes: int) -> None:
        if limit_bytes < 1:
            raise ValueError("limit_bytes must be positive")
        self.limit_bytes = limit_bytes
        self.in_use_bytes = 0

    @contextlib.contextmanager
    def reserve(self) -> Iterator[Reservation]:
        """A reservation, empty at first, returned to the budget when the block exits (however it exits)."""
        reservation = Reservation(self)
        try:
            yield reservation
        finally:
            self.in_use_bytes -= reservation.bytes
