"""The micro-batcher's contract, with time controlled by events: the batch function blocks on an asyncio.Event
the test opens, and "not done yet" is checked with ``asyncio.wait(..., timeout=...)``."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence

import pytest

from service.batching import MicroBatcher
from service.errors import InferenceFailedError, QueueFullError, ServiceUnavailableError

pytestmark = pytest.mark.anyio

# Long enough that a batch never closes on time unless a test wants it to.
NEVER_MS = 60_000.0
# Bounds each await so a broken batcher fails the test quickly instead of hanging it.
STEP_TIMEOUT_S = 5.0
NOT_YET_S = 0.05


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RecordingBatchFunction:
    """Doubles each item, records every batch and its thread, and can be held shut by the test."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, fail_on: str | None = None) -> None:
        self.loop = loop
        self.batches: list[list[str]] = []
        self.threads: set[str] = set()
        self.fail_on = fail_on
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()
        self.opened.set()

    def hold(self) -> None:
        self.opened.clear()

    def __call__(self, items: Sequence[str]) -> list[str]:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        self.loop.call_soon_threadsafe(self.entered.set)
        asyncio.run_coroutine_threadsafe(self.opened.wait(), self.loop).result(timeout=STEP_TIMEOUT_S)
        if self.fail_on in items:
            raise RuntimeError("model exploded")
        return [item * 2 for item in items]


async def make_batcher(
    *, max_batch_size: int = 4, max_batch_wait_ms: float = 0.0, queue_max_size: int = 16, fail_on: str | None = None
) -> tuple[MicroBatcher[str, str], RecordingBatchFunction]:
    function = RecordingBatchFunction(asyncio.get_running_loop(), fail_on=fail_on)
    batcher: MicroBatcher[str, str] = MicroBatcher(
        function, max_batch_size=max_batch_size, max_batch_wait_ms=max_batch_wait_ms, queue_max_size=queue_max_size
    )
    batcher.start()
    return batcher, function


async def submit_all(batcher: MicroBatcher[str, str], items: Sequence[str]) -> list[asyncio.Task[str]]:
    tasks = [asyncio.create_task(batcher.submit(item)) for item in items]
    await asyncio.sleep(0)  # let every task reach the queue
    return tasks


async def occupy_worker(batcher: MicroBatcher[str, str], function: RecordingBatchFunction) -> asyncio.Task[str]:
    """Submit one item and wait until the worker is inside the (held) batch function with it.

    Needs ``max_batch_wait_ms=0``: the one item is a due batch at once. Everything submitted while the worker
    is held is queued together, so the batches that follow are known exactly.
    """
    function.hold()
    function.entered.clear()
    (task,) = await submit_all(batcher, ["first"])
    await asyncio.wait_for(function.entered.wait(), STEP_TIMEOUT_S)
    return task


async def test_concurrent_requests_share_one_batch_and_each_gets_its_own_result() -> None:
    batcher, function = await make_batcher(max_batch_size=4, max_batch_wait_ms=NEVER_MS)

    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(x) for x in "abcd")), STEP_TIMEOUT_S)

    assert results == ["aa", "bb", "cc", "dd"]
    assert function.batches == [["a", "b", "c", "d"]]
    await batcher.stop()


async def test_items_waiting_behind_a_running_batch_go_out_together_in_request_order() -> None:
    batcher, function = await make_batcher(max_batch_size=3)
    first = await occupy_worker(batcher, function)
    waiting = await submit_all(batcher, ["p", "q", "r", "s"])

    function.opened.set()
    results = await asyncio.wait_for(asyncio.gather(first, *waiting), STEP_TIMEOUT_S)

    assert results == ["firstfirst", "pp", "qq", "rr", "ss"]
    # The closed batch is full at 3; the rest waits for the next one.
    assert function.batches == [["first"], ["p", "q", "r"], ["s"]]
    await batcher.stop()


async def test_a_lone_request_waits_at_most_max_batch_wait() -> None:
    batcher, function = await make_batcher(max_batch_size=8, max_batch_wait_ms=200)
    (task,) = await submit_all(batcher, ["x"])

    done, _ = await asyncio.wait({task}, timeout=NOT_YET_S)
    assert not done
    assert await asyncio.wait_for(task, STEP_TIMEOUT_S) == "xx"
    assert function.batches == [["x"]]
    await batcher.stop()


async def test_batch_closes_at_once_when_nothing_more_is_coming() -> None:
    more_coming = True
    function = RecordingBatchFunction(asyncio.get_running_loop())
    batcher: MicroBatcher[str, str] = MicroBatcher(
        function, max_batch_size=8, max_batch_wait_ms=NEVER_MS, queue_max_size=8, more_coming=lambda: more_coming
    )
    batcher.start()
    (first,) = await submit_all(batcher, ["a"])
    done, _ = await asyncio.wait({first}, timeout=NOT_YET_S)
    assert not done

    more_coming = False
    (second,) = await submit_all(batcher, ["b"])

    assert list(await asyncio.wait_for(asyncio.gather(first, second), STEP_TIMEOUT_S)) == ["aa", "bb"]
    assert function.batches == [["a", "b"]]
    await batcher.stop()


async def test_batching_runs_in_one_dedicated_thread() -> None:
    batcher, function = await make_batcher(max_batch_size=1)

    await asyncio.wait_for(asyncio.gather(*(batcher.submit(x) for x in "abc")), STEP_TIMEOUT_S)

    assert len(function.batches) == 3
    assert len(function.threads) == 1
    assert threading.current_thread().name not in function.threads
    await batcher.stop()


async def test_full_queue_raises_queue_full_at_once() -> None:
    batcher, function = await make_batcher(max_batch_size=1, queue_max_size=2)
    first = await occupy_worker(batcher, function)
    queued = await submit_all(batcher, ["b", "c"])

    with pytest.raises(QueueFullError):
        batcher.check_intake()
    with pytest.raises(QueueFullError):
        await batcher.submit("refused")

    function.opened.set()
    assert await asyncio.wait_for(asyncio.gather(first, *queued), STEP_TIMEOUT_S) == ["firstfirst", "bb", "cc"]
    assert batcher.queue_depth == 0
    await batcher.stop()


async def test_submit_many_queues_all_items_or_none() -> None:
    batcher, function = await make_batcher(max_batch_size=2, queue_max_size=3)
    first = await occupy_worker(batcher, function)
    (queued,) = await submit_all(batcher, ["b"])

    with pytest.raises(QueueFullError):
        await batcher.submit_many(["x", "y", "z"])
    assert batcher.queue_depth == 1
    many = asyncio.create_task(batcher.submit_many(["c", "d"]))
    await asyncio.sleep(0)
    assert batcher.queue_depth == 3

    function.opened.set()
    assert await asyncio.wait_for(many, STEP_TIMEOUT_S) == ["cc", "dd"]
    assert await asyncio.wait_for(asyncio.gather(first, queued), STEP_TIMEOUT_S) == ["firstfirst", "bb"]
    # Its items were split over batches of two, in order.
    assert function.batches == [["first"], ["b", "c"], ["d"]]
    await batcher.stop()


async def test_failing_batch_fails_only_its_requests_and_the_worker_continues(
    caplog: pytest.LogCaptureFixture,
) -> None:
    batcher, function = await make_batcher(max_batch_size=2, fail_on="bad")
    first = await occupy_worker(batcher, function)
    doomed = await submit_all(batcher, ["bad", "x"])
    spared = await submit_all(batcher, ["y", "z"])

    with caplog.at_level(logging.ERROR, logger="service.batching"):
        function.opened.set()
        outcomes = await asyncio.wait_for(
            asyncio.gather(first, *doomed, *spared, return_exceptions=True), STEP_TIMEOUT_S
        )

    assert outcomes[0] == "firstfirst"
    assert all(isinstance(outcome, InferenceFailedError) for outcome in outcomes[1:3])
    assert outcomes[3:] == ["yy", "zz"]
    assert "a batch of 2 failed" in caplog.text
    assert await asyncio.wait_for(batcher.submit("later"), STEP_TIMEOUT_S) == "laterlater"
    await batcher.stop()


async def test_batch_function_returning_the_wrong_count_fails_that_batch() -> None:
    function_calls: list[int] = []

    def short_by_one(items: Sequence[str]) -> list[str]:
        function_calls.append(len(items))
        return list(items)[1:]

    batcher: MicroBatcher[str, str] = MicroBatcher(
        short_by_one, max_batch_size=2, max_batch_wait_ms=NEVER_MS, queue_max_size=4
    )
    batcher.start()

    outcomes = await asyncio.gather(batcher.submit("a"), batcher.submit("b"), return_exceptions=True)

    assert all(isinstance(outcome, InferenceFailedError) for outcome in outcomes)
    assert function_calls == [2]
    await batcher.stop()


async def test_cancelled_waiting_request_is_skipped_and_harms_no_one() -> None:
    batcher, function = await make_batcher(max_batch_size=4)
    first = await occupy_worker(batcher, function)
    gone, kept = await submit_all(batcher, ["gone", "kept"])

    gone.cancel()
    function.opened.set()

    assert list(await asyncio.wait_for(asyncio.gather(first, kept), STEP_TIMEOUT_S)) == ["firstfirst", "keptkept"]
    assert gone.cancelled()
    assert function.batches == [["first"], ["kept"]]
    await batcher.stop()


async def test_cancelled_request_inside_a_running_batch_does_not_break_it() -> None:
    batcher, function = await make_batcher(max_batch_size=2)
    function.hold()
    gone, kept = await submit_all(batcher, ["gone", "kept"])
    await asyncio.wait_for(function.entered.wait(), STEP_TIMEOUT_S)

    gone.cancel()
    function.opened.set()

    assert await asyncio.wait_for(kept, STEP_TIMEOUT_S) == "keptkept"
    assert function.batches == [["gone", "kept"]]
    assert await asyncio.wait_for(batcher.submit("next"), STEP_TIMEOUT_S) == "nextnext"
    await batcher.stop()


async def test_stop_refuses_new_requests_and_drains_the_queue() -> None:
    batcher, function = await make_batcher(max_batch_size=2)
    first = await occupy_worker(batcher, function)
    queued = await submit_all(batcher, ["b", "c", "d"])

    stopping = asyncio.create_task(batcher.stop())
    await asyncio.sleep(0)
    with pytest.raises(ServiceUnavailableError):
        await batcher.submit("late")
    with pytest.raises(ServiceUnavailableError):
        batcher.check_intake()
    done, _ = await asyncio.wait({stopping}, timeout=NOT_YET_S)
    assert not done

    function.opened.set()
    await asyncio.wait_for(stopping, STEP_TIMEOUT_S)
    assert [task.result() for task in (first, *queued)] == ["firstfirst", "bb", "cc", "dd"]


async def test_stop_flushes_a_partial_batch_without_waiting_for_max_wait() -> None:
    batcher, function = await make_batcher(max_batch_size=8, max_batch_wait_ms=NEVER_MS)
    (task,) = await submit_all(batcher, ["x"])

    await asyncio.wait_for(batcher.stop(), STEP_TIMEOUT_S)

    assert task.result() == "xx"
    assert function.batches == [["x"]]


async def test_submit_before_start_is_refused() -> None:
    batcher: MicroBatcher[str, str] = MicroBatcher(
        lambda items: list(items), max_batch_size=1, max_batch_wait_ms=0, queue_max_size=1
    )

    with pytest.raises(ServiceUnavailableError):
        await batcher.submit("x")


@pytest.mark.parametrize(
    ("max_batch_size", "max_batch_wait_ms", "queue_max_size"), [(0, 1.0, 1), (1, -1.0, 1), (1, 1.0, 0)]
)
def test_invalid_limits_are_rejected(max_batch_size: int, max_batch_wait_ms: float, queue_max_size: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        MicroBatcher(
            lambda items: list(items),
            max_batch_size=max_batch_size,
            max_batch_wait_ms=max_batch_wait_ms,
            queue_max_size=queue_max_size,
        )
