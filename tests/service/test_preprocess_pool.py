"""The preprocessing pool: jobs run in other processes, the backlog is bounded, errors come back as raised,
cancelled callers keep their slot until their job really ends, and a dead worker costs only its jobs."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from imaging.errors import NoDigitFoundError
from service.preprocess_pool import JobTimeoutError, PoolClosedError, PoolFullError, PreprocessPool, WorkerDiedError

pytestmark = pytest.mark.anyio

STEP_TIMEOUT_S = 10.0
_POLL_S = 0.01


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def held_job(gate: Path, value: int) -> tuple[int, int]:
    """Announces that it started (``<gate>.started.<value>``), then returns only once ``gate`` exists."""
    gate.with_name(f"{gate.name}.started.{value}").touch()
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    return value * 2, os.getpid()


def page_faults_of_reused_buffers(size_bytes: int, count: int, rounds: int) -> int:
    """Minor page faults over ``rounds`` of touching ``count`` buffers of ``size_bytes`` at once, then freeing them
    (a preprocessing job's pattern: several image-sized arrays alive together)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        buffers = [np.ones(size_bytes, dtype=np.uint8) for _ in range(count)]
        del buffers
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def echo(data: bytes) -> bytes:
    return data


def raise_no_digit() -> None:
    raise NoDigitFoundError()


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def wait_started(gate: Path, value: int) -> None:
    marker = gate.with_name(f"{gate.name}.started.{value}")
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while not marker.exists():
        assert time.monotonic() < deadline, f"job {value} never started"
        await asyncio.sleep(_POLL_S)


async def one_running_one_waiting(
    pool: PreprocessPool, gate: Path
) -> tuple[asyncio.Task[tuple[int, int]], asyncio.Task[tuple[int, int]]]:
    """Job 1 running in the pool's only worker, held until ``gate`` exists, and job 2 queued behind it."""
    running = asyncio.create_task(pool.run(held_job, gate, 1))
    await wait_started(gate, 1)
    waiting = asyncio.create_task(pool.run(held_job, gate, 2))
    await asyncio.sleep(0)
    return running, waiting


@pytest.fixture
async def pool() -> AsyncIterator[PreprocessPool]:
    pool = PreprocessPool(workers=1, max_waiting=1)
    await pool.start()
    yield pool
    await pool.shutdown()


async def test_runs_the_function_in_a_worker_process(pool: PreprocessPool, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.touch()

    value, pid = await asyncio.wait_for(pool.run(held_job, gate, 21), STEP_TIMEOUT_S)

    assert value == 42
    assert pid != os.getpid()


async def test_workers_reuse_freed_image_buffers(pool: PreprocessPool) -> None:
    # Four image-sized buffers (256 pages each) freed by one job are reused by the next, not mapped afresh.
    await pool.run(page_faults_of_reused_buffers, 1 << 20, 4, 1)
    faults = await asyncio.wait_for(pool.run(page_faults_of_reused_buffers, 1 << 20, 4, 20), STEP_TIMEOUT_S)
    assert faults < 256


async def test_large_jobs_and_answers_both_ways_at_once_do_not_deadlock(pool: PreprocessPool) -> None:
    # Far more than a socket buffer each way: the second job is written while the first one's answer comes back.
    payloads = [bytes([value]) * (8 << 20) for value in (1, 2)]
    answers = await asyncio.wait_for(asyncio.gather(*(pool.run(echo, p) for p in payloads)), STEP_TIMEOUT_S)
    assert answers == payloads


async def test_the_jobs_own_error_comes_back_as_raised(pool: PreprocessPool) -> None:
    with pytest.raises(NoDigitFoundError) as raised:
        await asyncio.wait_for(pool.run(raise_no_digit), STEP_TIMEOUT_S)
    assert type(raised.value) is NoDigitFoundError
    assert pool.pending == 0


async def test_backlog_over_the_bound_is_refused_at_once(pool: PreprocessPool, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    running, waiting = await one_running_one_waiting(pool, gate)
    assert pool.pending == 2

    with pytest.raises(PoolFullError):
        await pool.run(held_job, gate, 3)

    gate.touch()
    results = await asyncio.wait_for(asyncio.gather(running, waiting), STEP_TIMEOUT_S)
    assert [value for value, _ in results] == [2, 4]
    assert pool.pending == 0


async def test_cancelled_caller_keeps_its_slot_until_the_job_ends(pool: PreprocessPool, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    caller = asyncio.create_task(pool.run(held_job, gate, 1))
    await wait_started(gate, 1)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert pool.pending == 1

    gate.touch()
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while pool.pending:
        assert time.monotonic() < deadline, "the finished job never released its slot"
        await asyncio.sleep(_POLL_S)


async def test_a_dead_worker_fails_its_job_and_the_pool_recovers(pool: PreprocessPool, tmp_path: Path) -> None:
    with pytest.raises(WorkerDiedError):
        await asyncio.wait_for(pool.run(die), STEP_TIMEOUT_S)

    gate = tmp_path / "gate"
    gate.touch()
    value, pid = await asyncio.wait_for(pool.run(held_job, gate, 5), STEP_TIMEOUT_S)
    assert value == 10
    assert pid != os.getpid()
    assert pool.pending == 0


async def test_a_dead_worker_costs_only_its_own_job(tmp_path: Path) -> None:
    pool = PreprocessPool(workers=2, max_waiting=0)
    await pool.start()
    try:
        gate = tmp_path / "gate"
        survivor = asyncio.create_task(pool.run(held_job, gate, 1))
        await wait_started(gate, 1)
        with pytest.raises(WorkerDiedError):
            await asyncio.wait_for(pool.run(die), STEP_TIMEOUT_S)
        gate.touch()
        value, _ = await asyncio.wait_for(survivor, STEP_TIMEOUT_S)
        assert value == 2
    finally:
        await pool.shutdown()


async def test_a_job_over_its_deadline_fails_and_its_worker_is_replaced(tmp_path: Path) -> None:
    pool = PreprocessPool(workers=1, max_waiting=1, job_timeout_s=0.5)
    await pool.start()
    try:
        gate = tmp_path / "gate"  # never opened: the first job would run for STEP_TIMEOUT_S
        stuck = asyncio.create_task(pool.run(held_job, gate, 1))
        await wait_started(gate, 1)
        queued = asyncio.create_task(pool.run(echo, b"next"))
        started = time.monotonic()
        with pytest.raises(JobTimeoutError):
            await asyncio.wait_for(stuck, STEP_TIMEOUT_S)
        overran_after_s = time.monotonic() - started
        next_answer = await asyncio.wait_for(queued, STEP_TIMEOUT_S)
    finally:
        await pool.shutdown()

    assert overran_after_s < STEP_TIMEOUT_S / 2
    assert next_answer == b"next"
    assert pool.pending == 0


async def test_the_job_queued_behind_a_fatal_one_runs_on_the_new_worker(pool: PreprocessPool, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    # One worker: the second job is sent to it while the first one kills it.
    fatal, queued = pool.run(die), pool.run(held_job, gate, 5)
    outcomes = await asyncio.wait_for(asyncio.gather(fatal, queued, return_exceptions=True), STEP_TIMEOUT_S)

    assert isinstance(outcomes[0], WorkerDiedError)
    assert outcomes[1][0] == 10
    assert pool.pending == 0


async def test_a_cancelled_job_that_never_started_is_dropped(pool: PreprocessPool, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    running, waiting = await one_running_one_waiting(pool, gate)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    gate.touch()
    value, _ = await asyncio.wait_for(running, STEP_TIMEOUT_S)
    await asyncio.wait_for(pool.run(held_job, gate, 3), STEP_TIMEOUT_S)
    assert value == 2
    assert pool.pending == 0
    assert not gate.with_name(f"{gate.name}.started.2").exists()


async def test_shutdown_finishes_accepted_jobs_then_refuses_work(pool: PreprocessPool, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    accepted = [asyncio.create_task(pool.run(held_job, gate, value)) for value in (1, 2)]
    await wait_started(gate, 1)
    stopping = asyncio.create_task(pool.shutdown())
    await asyncio.sleep(0)

    with pytest.raises(PoolClosedError):
        await pool.run(int, "1")
    gate.touch()
    await asyncio.wait_for(stopping, STEP_TIMEOUT_S)
    assert [value for value, _ in await asyncio.gather(*accepted)] == [2, 4]


async def test_a_pool_not_started_refuses_work() -> None:
    with pytest.raises(PoolClosedError):
        await PreprocessPool(workers=1, max_waiting=1).run(int, "1")


def test_invalid_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match="workers must be positive"):
        PreprocessPool(workers=0, max_waiting=1)
