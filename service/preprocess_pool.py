"""A bounded pool of worker processes that decode and preprocess uploads beside the event loop.

Why processes and not threads: decoding and preprocessing a small upload is mostly short NumPy and Pillow calls
that hold the GIL. In threads they compete with the event loop (HTTP parsing, routing, JSON) for the one
interpreter lock; in processes they run on the other cores.

Contract of :class:`PreprocessPool`:

- At most ``workers`` jobs run at once and at most ``max_waiting`` more wait; beyond that :meth:`run` raises
  :class:`QueueFullError` (503 with ``Retry-After``) at once, so a flood of large uploads cannot grow memory and
  latency without limit in front of the batcher's own bounded queue.
- A job's exception comes back to the caller as raised (the service's errors pickle with their detail).
- A worker that dies (killed, out of memory, a crash inside a decoder) fails the jobs in flight with
  :class:`PreprocessingFailedError` (503) and the pool is replaced: the server process lives on, and the next
  request gets fresh workers.
- A cancelled caller's job still runs to the end (a job cannot be interrupted) and keeps its slot until then.
- :meth:`shutdown` refuses new jobs, waits for the running ones and stops the workers.

Workers are forked from a fork server that has imported :mod:`service.preprocessing` once, so a new worker starts
in milliseconds and never inherits the server's threads. They ignore SIGINT, which a terminal sends to the whole
process group: Ctrl-C stops the server through its lifespan, which then stops the workers.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import ParamSpec, TypeVar

from service.errors import PreprocessingFailedError, QueueFullError, ServiceUnavailableError

P = ParamSpec("P")
R = TypeVar("R")

_PRELOAD = ["service.preprocessing"]


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class PreprocessPool:
    """Runs picklable blocking functions in worker processes with a bounded backlog (see the module docstring)."""

    def __init__(self, workers: int, max_waiting: int) -> None:
        if workers < 1 or max_waiting < 0:
            raise ValueError("workers must be positive and max_waiting not negative")
        self._workers = workers
        self._capacity = workers + max_waiting
        self._pending = 0
        self._closed = False
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)  # takes effect when the fork server starts (once per process)
        return ProcessPoolExecutor(self._workers, mp_context=context, initializer=_ignore_sigint)

    @property
    def pending(self) -> int:
        """Jobs running or waiting for a worker."""
        return self._pending

    async def start(self) -> None:
        """Start the fork server and the workers now, so the first requests do not wait for them."""
        await asyncio.gather(*(self.run(os.getpid) for _ in range(self._workers)))

    def check_intake(self) -> None:
        """Raise now what :meth:`run` would raise for lack of room, so callers can refuse before working.

        :class:`ServiceUnavailableError` once shut down, :class:`QueueFullError` when the backlog is full.
        """
        if self._closed:
            raise ServiceUnavailableError()
        if self._pending >= self._capacity:
            raise QueueFullError()

    async def run(self, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``function(*args, **kwargs)`` in a worker process (the function and its arguments must pickle).

        Raises what the function raised, :class:`QueueFullError` if the backlog is full, and
        :class:`PreprocessingFailedError` if the worker died.
        """
        self.check_intake()
        executor = self._executor
        loop = asyncio.get_running_loop()
        try:
            # A pool already broken refuses at submit; one that breaks while the job runs fails its future.
            future = executor.submit(function, *args, **kwargs)
            self._pending += 1
            future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release))
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            self._replace(executor)
            raise PreprocessingFailedError() from None

    def _release(self) -> None:
        self._pending -= 1

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        # Every job in flight on the broken pool fails together; the first to notice installs the new pool.
        if self._executor is broken and not self._closed:
            self._executor = self._new_executor()
            broken.shutdown(wait=False, cancel_futures=True)

    def shutdown(self) -> None:
        """Refuse new jobs (:class:`ServiceUnavailableError`), wait for running ones and stop the workers."""
        self._closed = True
        self._executor.shutdown(wait=True)
