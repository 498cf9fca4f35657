"""The bounded thread pool: work runs off the event loop, the backlog is bounded, and cancelled callers keep
their slot until their job really ends."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service.errors import QueueFullError, ServiceUnavailableError
from service.threadpool import BoundedThreadPool

pytestmark = pytest.mark.anyio

STEP_TIMEOUT_S = 5.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class HeldJob:
    """A blocking job that reports when it starts and returns only once the test opens it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.started = asyncio.Event()
        self.opened = asyncio.Event()

    def __call__(self, value: int) -> tuple[int, str]:
        self.loop.call_soon_threadsafe(self.started.set)
        asyncio.run_coroutine_threadsafe(self.opened.wait(), self.loop).result(timeout=STEP_TIMEOUT_S)
        return value * 2, threading.current_thread().name


async def test_runs_the_function_in_a_worker_thread() -> None:
    pool = BoundedThreadPool(max_threads=1, max_waiting=0)
    job = HeldJob(asyncio.get_running_loop())
    job.opened.set()

    value, thread = await pool.run(job, 21)

    assert value == 42
    assert thread != threading.current_thread().name
    pool.shutdown()


async def test_backlog_over_the_bound_is_refused_at_once() -> None:
    pool = BoundedThreadPool(max_threads=1, max_waiting=1)
    job = HeldJob(asyncio.get_running_loop())
    running = asyncio.create_task(pool.run(job, 1))
    await asyncio.wait_for(job.started.wait(), STEP_TIMEOUT_S)
    waiting = asyncio.create_task(pool.run(job, 2))
    await asyncio.sleep(0)
    assert pool.pending == 2

    with pytest.raises(QueueFullError):
        await pool.run(job, 3)

    job.opened.set()
    results = await asyncio.wait_for(asyncio.gather(running, waiting), STEP_TIMEOUT_S)
    assert [value for value, _ in results] == [2, 4]
    assert pool.pending == 0
    pool.shutdown()


async def test_cancelled_caller_keeps_its_slot_until_the_job_ends() -> None:
    pool = BoundedThreadPool(max_threads=1, max_waiting=0)
    job = HeldJob(asyncio.get_running_loop())
    caller = asyncio.create_task(pool.run(job, 1))
    await asyncio.wait_for(job.started.wait(), STEP_TIMEOUT_S)

    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    with pytest.raises(QueueFullError):
        await pool.run(job, 2)

    job.opened.set()
    await asyncio.wait_for(asyncio.to_thread(pool.shutdown), STEP_TIMEOUT_S)
    await asyncio.sleep(0)  # the release is scheduled on the loop by the finished job
    assert pool.pending == 0


async def test_a_shut_down_pool_refuses_work() -> None:
    pool = BoundedThreadPool(max_threads=1, max_waiting=1)
    pool.shutdown()

    with pytest.raises(ServiceUnavailableError):
        await pool.run(int, "1")


def test_invalid_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_threads must be positive"):
        BoundedThreadPool(max_threads=0, max_waiting=1)
