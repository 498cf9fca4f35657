"""A bounded thread pool for CPU-bound request work (upload decoding), so it never blocks the event loop.

At most ``max_threads`` jobs run at once and at most ``max_waiting`` more wait; beyond that :meth:`run` raises
:class:`QueueFullError` (503 with ``Retry-After``) at once. Without the bound a flood of large uploads would grow
memory and latency without limit in front of the batcher's own bounded queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from service.errors import QueueFullError, ServiceUnavailableError

P = ParamSpec("P")
R = TypeVar("R")


class BoundedThreadPool:
    """Runs blocking functions in worker threads with a bounded backlog (see the module docstring)."""

    def __init__(self, max_threads: int, max_waiting: int, name: str = "preprocess") -> None:
        if max_threads < 1 or max_waiting < 0:
            raise ValueError("max_threads must be positive and max_waiting not negative")
        self._executor = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix=name)
        self._capacity = max_threads + max_waiting
        self._pending = 0
        self._closed = False

    @property
    def pending(self) -> int:
        """Jobs running or waiting for a thread."""
        return self._pending

    def check_intake(self) -> None:
        """Raise now what :meth:`run` would raise for lack of room, so callers can refuse before working.

        :class:`ServiceUnavailableError` once shut down, :class:`QueueFullError` when the backlog is full.
        """
        if self._closed:
            raise ServiceUnavailableError()
        if self._pending >= self._capacity:
            raise QueueFullError()

    async def run(self, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``function(*args, **kwargs)`` in a worker thread; :class:`QueueFullError` if the backlog is full.

        A job whose caller is cancelled still runs to the end (threads cannot be interrupted) and keeps its
        slot until then, so the bound holds for the work actually in progress.
        """
        self.check_intake()
        self._pending += 1
        future = self._executor.submit(function, *args, **kwargs)
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release))
        return await asyncio.wrap_future(future)

    def _release(self) -> None:
        self._pending -= 1

    def shutdown(self) -> None:
        """Refuse new jobs (:class:`ServiceUnavailableError`), wait for running ones and release the threads."""
        self._closed = True
        self._executor.shutdown(wait=True)
