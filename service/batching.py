"""The micro-batcher: concurrent requests wait in one bounded queue and are processed together, in batches.

Contract of :class:`MicroBatcher`:

- A batch closes when it holds ``max_batch_size`` items or ``max_batch_wait_ms`` after its *first* item was
  queued, whichever comes first; items that waited while the previous batch ran therefore go out at once.
  If ``more_coming`` is given and says no further item is on its way, the batch closes at once instead of
  waiting for company that cannot arrive (a lone request pays no batching delay); it is asked again whenever
  an item arrives.
- Results come back in request order: item ``i`` of a batch receives result ``i`` of the batch function.
- An exception in the batch function fails every request of that batch, and only those, with
  :class:`InferenceFailedError` (503); it is logged and the worker keeps running.
- More than ``queue_max_size`` waiting items: :meth:`MicroBatcher.submit` raises :class:`QueueFullError` at once,
  which the API maps to 503 with ``Retry-After``, so waiting time stays bounded under any load.
  :meth:`MicroBatcher.submit_many` queues all of its items or, without room for all, none.
- A caller that goes away (cancelled, client disconnected) loses its result and nothing else; its item is
  skipped if its batch has not started yet.
- :meth:`MicroBatcher.stop` refuses new items, runs every queued item to completion, then stops the worker.

One worker task per batcher runs the batch function in a dedicated single-thread executor, so the event loop
never computes and batches never overlap.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from service.errors import InferenceFailedError, QueueFullError, ServiceUnavailableError

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(eq=False)
class _Waiting(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    queued_at: float


class MicroBatcher(Generic[T, R]):
    """Groups items submitted concurrently into batches for ``process_batch`` (see the module docstring)."""

    def __init__(
        self,
        process_batch: Callable[[Sequence[T]], Sequence[R]],
        *,
        max_batch_size: int,
        max_batch_wait_ms: float,
        queue_max_size: int,
        more_coming: Callable[[], bool] | None = None,
        name: str = "batcher",
    ) -> None:
        if max_batch_size < 1 or queue_max_size < 1 or max_batch_wait_ms < 0:
            raise ValueError("max_batch_size and queue_max_size must be positive, max_batch_wait_ms not negative")
        self._process_batch = process_batch
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_batch_wait_ms / 1000
        self._queue_max_size = queue_max_size
        self._more_coming = more_coming
        self._name = name
        self._waiting: deque[_Waiting[T, R]] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._executor: ThreadPoolExecutor | None = None
        self._worker: asyncio.Task[None] | None = None

    @property
    def queue_depth(self) -> int:
        """Items waiting for a batch (not counting the batch being processed)."""
        return len(self._waiting)

    @property
    def queue_max_size(self) -> int:
        return self._queue_max_size

    def check_intake(self, count: int = 1) -> None:
        """Raise now what :meth:`submit_many` would raise for ``count`` items, so callers can refuse before working.

        :class:`ServiceUnavailableError` when the batcher is not running, :class:`QueueFullError` when there is
        no room for ``count`` more items.
        """
        if not self.running:
            raise ServiceUnavailableError()
        if len(self._waiting) + count > self._queue_max_size:
            raise QueueFullError()

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._closing

    def start(self) -> None:
        """Start the worker task on the running event loop."""
        if self._worker is not None:
            raise RuntimeError(f"{self._name} already started")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        self._worker = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its result.

        Raises :class:`QueueFullError` when ``queue_max_size`` items are already waiting,
        :class:`ServiceUnavailableError` when the batcher is not running, and :class:`InferenceFailedError` when
        the batch it joined failed.
        """
        self.check_intake()
        return await self._enqueue(item)

    async def submit_many(self, items: Sequence[T]) -> list[R]:
        """Queue every item of ``items`` at once (or none, raising as :meth:`submit`) and wait for all results.

        The items may land in different batches; the first failure raises and the other results are dropped.
        """
        self.check_intake(len(items))
        return list(await asyncio.gather(*(self._enqueue(item) for item in items)))

    def _enqueue(self, item: T) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        waiting: _Waiting[T, R] = _Waiting(item, loop.create_future(), loop.time())
        self._waiting.append(waiting)
        self._wakeup.set()
        return waiting.future

    async def stop(self) -> None:
        """Refuse new items, finish every queued one, then stop the worker and its thread."""
        self._closing = True
        self._wakeup.set()
        if self._worker is not None:
            await self._worker
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        while (batch := await self._next_batch()) is not None:
            if batch:
                await self._execute(batch)

    async def _next_batch(self) -> list[_Waiting[T, R]] | None:
        """The next batch once it is due, ``[]`` if only cancelled items were due, ``None`` once closed and empty."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._waiting:
                if self._closing:
                    return None
                timeout_s = None
            else:
                timeout_s = self._waiting[0].queued_at + self._max_wait_s - loop.time()
                if len(self._waiting) >= self._max_batch_size or timeout_s <= 0 or not self._expect_more():
                    return self._pop_batch()
            self._wakeup.clear()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    def _expect_more(self) -> bool:
        if self._closing:
            return False
        return self._more_coming is None or self._more_coming()

    def _pop_batch(self) -> list[_Waiting[T, R]]:
        batch: list[_Waiting[T, R]] = []
        while self._waiting and len(batch) < self._max_batch_size:
            waiting = self._waiting.popleft()
            # A cancelled caller's future is done already: skip its item rather than compute for nobody.
            if not waiting.future.done():
                batch.append(waiting)
        return batch

    async def _execute(self, batch: list[_Waiting[T, R]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._process_batch, [w.item for w in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
        except Exception as exc:
            logger.exception("%s: a batch of %d failed; failing only its requests", self._name, len(batch))
            for waiting in batch:
                if not waiting.future.done():
                    error = InferenceFailedError()
                    error.__cause__ = exc
                    waiting.future.set_exception(error)
            return
        for waiting, result in zip(batch, results, strict=True):
            if not waiting.future.done():
                waiting.future.set_result(result)
