"""A front end's side of the inference process: one connection, and the registry and batchers routes use over it.

Contract:

- :class:`EngineClient` keeps one Unix-socket connection to the inference process and reconnects (every
  ``reconnect_interval_s``) whenever it is lost. While it is down, the client is not running: readiness says 503
  and every call fails at once with :class:`InferenceProcessDownError` (503 + Retry-After); calls in flight when
  the connection drops fail the same way, so nothing waits for an answer that cannot come.
- :class:`RemoteBatcher` and :class:`RemoteRegistry` have the interfaces of ``service.engine``: the routes cannot
  tell them from an engine in their own process. Items travel without their model snapshot: the inference
  process answers with the snapshot it serves when the item arrives, and each answer names the versions used.
- The intake check uses the queue depth reported with the last answer; the inference process's own bounded queue
  is the authority and refuses with 503 when it is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from service.engine_wire import (
    Answer,
    Catalog,
    FrameCheck,
    Kind,
    Message,
    Reload,
    Submit,
    Upstream,
    encode,
    read_message,
)
from service.errors import InferenceProcessDownError, QueueFullError
from service.registry import ModelChange, ModelSet, ModelStatus

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# What an item carries instead of the front end's snapshot: the inference process fills in its own.
_NO_MODELS = ModelSet()


class EngineClient:
    """The connection to the inference process at ``socket_path`` (see the module docstring)."""

    def __init__(self, socket_path: Path, *, reconnect_interval_s: float = 0.05) -> None:
        self._socket_path = socket_path
        self._reconnect_interval_s = reconnect_interval_s
        self._writer: asyncio.StreamWriter | None = None
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._call_ids = itertools.count()
        self._catalog: Catalog | None = None
        # The catalog's served models, made once per catalog: like a local registry's swap, one snapshot object.
        self.models = ModelSet()
        self._connected = asyncio.Event()
        self._upstream = 0
        self.queue_depth = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._writer is not None and self._catalog is not None

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            raise InferenceProcessDownError()
        return self._catalog

    async def start(self, timeout_s: float) -> None:
        """Connect in the background; wait up to ``timeout_s`` for the first catalog (not ready until then)."""
        self._task = asyncio.create_task(self._run(), name="engine-client")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._connected.wait()
        if not self.running:
            logger.error("no inference process at %s yet: not ready until it answers", self._socket_path)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._drop_connection()

    def set_upstream(self, count: int) -> None:
        """Tell the inference process how many uploads this front end is reading or preparing."""
        self._upstream = count
        if self._writer is not None:
            self._writer.write(encode(Upstream(count)))

    async def call(self, make: Callable[[int], Submit | Reload | FrameCheck]) -> Any:
        """Send ``make(call_id)`` (a call message) and wait for its answer's results."""
        if self._writer is None:
            raise InferenceProcessDownError()
        call_id = next(self._call_ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        try:
            self._writer.write(encode(make(call_id)))
            return await future
        finally:
            self._calls.pop(call_id, None)

    async def _run(self) -> None:
        while True:
            try:
                reader, self._writer = await asyncio.open_unix_connection(self._socket_path)
            except OSError:
                await asyncio.sleep(self._reconnect_interval_s)
                continue
            if self._upstream:
                self._writer.write(encode(Upstream(self._upstream)))
            try:
                while True:
                    self._dispatch(await read_message(reader))
            except (asyncio.IncompleteReadError, ConnectionError):
                logger.error("the inference process went away; failing its requests and reconnecting")
            finally:
                self._drop_connection()

    async def is_newest(self, stream: str, frame: int, *, admit: bool) -> bool:
        """:meth:`service.engine.Engine.is_newest`, asked of the inference process."""
        newest: bool = await self.call(lambda call_id: FrameCheck(call_id, stream, frame, admit))
        return newest

    def _dispatch(self, message: Message) -> None:
        if isinstance(message, Catalog):
            self._catalog = message
            self.models = ModelSet({name: s.served for name, s in message.statuses.items() if s.served is not None})
            self._connected.set()
        elif isinstance(message, Answer):
            self.queue_depth = message.queue_depth
            future = self._calls.get(message.call_id)
            if future is None or future.done():
                return
            if message.error is not None:
                future.set_exception(message.error)
            else:
                future.set_result(message.results)

    def _drop_connection(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        self._catalog = None
        self.models = ModelSet()
        self._connected.clear()
        for future in self._calls.values():
            if not future.done():
                future.set_exception(InferenceProcessDownError())


class RemoteBatcher(Generic[T, R]):
    """The inference process's ``kind`` batcher, as a :class:`service.engine.Batcher`."""

    def __init__(self, client: EngineClient, kind: Kind, queue_max_size: int) -> None:
        self._client = client
        self._kind = kind
        self._queue_max_size = queue_max_size

    @property
    def running(self) -> bool:
        return self._client.running

    @property
    def queue_depth(self) -> int:
        return self._client.queue_depth

    @property
    def queue_max_size(self) -> int:
        return self._queue_max_size

    def check_intake(self, count: int = 1) -> None:
        if not self._client.running:
            raise InferenceProcessDownError()
        if self._client.queue_depth + count > self._queue_max_size:
            raise QueueFullError()

    async def submit(self, item: T) -> R:
        return (await self.submit_many([item]))[0]

    async def submit_many(self, items: Sequence[T]) -> list[R]:
        self.check_intake(len(items))
        bare = [dataclasses.replace(item, models=_NO_MODELS) for item in items]  # type: ignore[type-var]
        results: list[R] = await self._client.call(lambda call_id: Submit(call_id, self._kind, bare))
        return results


class RemoteRegistry:
    """The inference process's registry, as a :class:`service.engine.Registry` (manifests only)."""

    def __init__(self, client: EngineClient) -> None:
        self._client = client

    @property
    def device(self) -> str:
        return self._client.catalog.device

    @property
    def models(self) -> ModelSet:
        """The served models as of the latest catalog (none while disconnected)."""
        return self._client.models

    @property
    def statuses(self) -> Mapping[str, ModelStatus]:
        return self._client.catalog.statuses

    async def reload(self) -> list[ModelChange]:
        changes: list[ModelChange] = await self._client.call(Reload)
        return changes
