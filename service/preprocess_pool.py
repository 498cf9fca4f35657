"""A bounded pool of worker processes that runs blocking functions (the service's decoding and preprocessing)
beside the event loop. Self-contained: it imports nothing of this project and raises only its own errors.

Why processes and not threads: decoding and preprocessing a small upload is mostly short NumPy and Pillow calls
that hold the GIL. In threads they compete with the event loop (HTTP parsing, routing, JSON) for the one
interpreter lock; in processes they run on the other cores.

Why not :class:`concurrent.futures.ProcessPoolExecutor`: it moves every job through a manager thread and a queue
feeder thread in the server process, and each of those hand-offs takes the GIL from the event loop. Here each
worker has its own socket pair, and the event loop itself writes the pickled job and reads the pickled answer
(one length-prefixed frame each way), so the server process spends no thread on the pool. While jobs wait, each
worker holds the next one in its socket, so it never idles waiting for a busy event loop to send it work.

Contract of :class:`PreprocessPool`:

- At most ``workers`` jobs run at once and at most ``max_waiting`` more wait, first come first served; beyond
  that :meth:`run` raises :class:`PoolFullError` at once, so a flood of large uploads cannot grow memory and
  latency without limit in front of the batcher's own bounded queue.
- A job's exception comes back to the caller as raised (it must pickle).
- A worker that dies (killed, out of memory, a crash inside a decoder) fails only the job it was running, with
  :class:`WorkerDiedError`; a fresh worker takes its place and the job queued behind it.
- A job still running ``job_timeout_s`` after its answer began to be awaited (about when it started running) fails
  with :class:`JobTimeoutError`; its worker is killed and replaced the same way.
- A cancelled caller's job still runs to the end once sent to a worker (a job cannot be interrupted) and keeps
  its slot until then; one still waiting in the queue is dropped.
- :meth:`shutdown` refuses new jobs (:class:`PoolClosedError`), lets every accepted job finish, then stops
  the workers.

Workers are forked from a fork server that has imported the ``preload`` modules once, so a new worker starts in
milliseconds and never inherits the server's threads. They ignore SIGINT, which a terminal sends to the whole
process group: Ctrl-C stops the server through its lifespan, which then stops the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import multiprocessing
import pickle
import signal
import socket
import struct
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any, ParamSpec, TypeVar, cast

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# Every message, either way, is one frame: its length, then a pickle.
_FRAME_HEADER = struct.Struct("!Q")
# Jobs sent to a worker before the oldest one's answer is read (see PreprocessPool._drive).
_JOBS_PER_WORKER = 2
# glibc's mallopt parameters (malloc.h) and the values the workers use; see keep_freed_memory.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024
_MMAP_THRESHOLD_BYTES = 16 * 1024 * 1024


class PoolError(Exception):
    """Base of the pool's own failures (a job's own exceptions pass through unchanged)."""


class PoolClosedError(PoolError):
    """The pool has not started yet or is shutting down."""


class PoolFullError(PoolError):
    """Every worker is busy and the backlog is full: retry later."""


class WorkerDiedError(PoolError):
    """The worker running this job died (killed, out of memory, a crash inside native code)."""


class JobTimeoutError(PoolError):
    """The job ran past the pool's ``job_timeout_s``; its worker was killed."""


def _frame(payload: object) -> bytes:
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return _FRAME_HEADER.pack(len(data)) + data


def keep_freed_memory() -> None:
    """Let freed image buffers stay in the heap for the next job instead of going back to the kernel.

    In a fresh process glibc maps every allocation over 128 KB (a 280x280 RGBA image is 306 KB) with its own
    ``mmap`` and unmaps it on free, so each job faulted its buffers in anew: about 250 page faults and most of a
    millisecond of kernel time per canvas upload. Buffers up to 16 MB now come from the heap, which keeps up to
    64 MB free before trimming. Without glibc (no ``mallopt``) this does nothing.
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)


def _serve_jobs(channel: socket.socket) -> None:
    """A worker's whole life: answer each ``(function, args, kwargs)`` frame with ``(ok, result or exception)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_freed_memory()
    with channel, channel.makefile("rb") as incoming:
        # EOF (the server closed its end, or went away) is the order to stop.
        while len(header := incoming.read(_FRAME_HEADER.size)) == _FRAME_HEADER.size:
            (size,) = _FRAME_HEADER.unpack(header)
            function, args, kwargs = pickle.loads(incoming.read(size))
            try:
                answer = _frame((True, function(*args, **kwargs)))
            except Exception as exc:  # the job's own error, to be raised in the caller
                try:
                    answer = _frame((False, exc))
                except Exception:  # an exception that does not pickle still fails only its job
                    answer = _frame((False, RuntimeError(f"{type(exc).__name__}: {exc}")))
            channel.sendall(answer)


@dataclass(eq=False)
class _Job:
    frame: bytes
    future: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def answer(self) -> tuple[bool, Any]:
        """The next answer, in the order the jobs were sent; EOF or :class:`ConnectionError` if the worker died.

        Jobs are written without waiting for them to drain (the pool's bound caps what is buffered): a worker
        blocked sending a large answer must find its answer being read, not the server waiting for it to read.
        """
        (size,) = _FRAME_HEADER.unpack(await self.reader.readexactly(_FRAME_HEADER.size))
        return cast(tuple[bool, Any], pickle.loads(await self.reader.readexactly(size)))

    async def stop(self) -> None:
        """Close the channel (the worker exits at EOF) and reap the process."""
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
        await asyncio.to_thread(self.process.join)


class PreprocessPool:
    """Runs picklable blocking functions in worker processes with a bounded backlog (see the module docstring)."""

    def __init__(
        self, workers: int, max_waiting: int, preload: Sequence[str] = (), job_timeout_s: float | None = None
    ) -> None:
        if workers < 1 or max_waiting < 0:
            raise ValueError("workers must be positive and max_waiting not negative")
        self._workers = workers
        self._job_timeout_s = job_timeout_s
        self._capacity = workers + max_waiting
        self._pending = 0
        self._closed = False
        self._context = multiprocessing.get_context("forkserver")
        # Takes effect when the fork server starts, once per process: the first pool's preload list is the one used.
        self._context.set_forkserver_preload(list(preload))
        self._jobs: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._drivers: list[asyncio.Task[None]] = []

    @property
    def pending(self) -> int:
        """Jobs running or waiting for a worker."""
        return self._pending

    async def start(self) -> None:
        """Start the fork server and the workers now, so the first requests do not wait for them."""
        if self._closed or self._drivers:
            raise RuntimeError("the pool can be started only once")
        workers = await asyncio.gather(*(self._spawn() for _ in range(self._workers)))
        self._drivers = [asyncio.create_task(self._drive(worker), name="preprocess-worker") for worker in workers]

    def check_intake(self) -> None:
        """Raise now what :meth:`run` would raise for lack of room, so callers can refuse before working.

        :class:`PoolClosedError` when not started or shut down, :class:`PoolFullError` when the backlog is full.
        """
        if self._closed or not self._drivers:
            raise PoolClosedError()
        if self._pending >= self._capacity:
            raise PoolFullError()

    async def run(self, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``function(*args, **kwargs)`` in a worker process (the function and its arguments must pickle).

        Raises what the function raised, :class:`PoolFullError` if the backlog is full, :class:`PoolClosedError`
        if the pool is not running, :class:`WorkerDiedError` if the worker died and :class:`JobTimeoutError` if
        the job overran.
        """
        self.check_intake()
        job = _Job(_frame((function, args, kwargs)))
        self._pending += 1
        self._jobs.put_nowait(job)
        return cast(R, await job.future)

    async def shutdown(self) -> None:
        """Refuse new jobs, let the accepted ones finish, then stop the workers."""
        if self._closed:
            return
        self._closed = True
        for _ in self._drivers:
            self._jobs.put_nowait(None)  # behind every accepted job: each driver stops at its first
        await asyncio.gather(*self._drivers)

    async def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair()
        with theirs:
            process = self._context.Process(target=_serve_jobs, args=(theirs,), name="preprocess", daemon=True)
            # Blocking: it asks the fork server (started on first use, which imports the preload) for a child.
            await asyncio.to_thread(process.start)
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        return _Worker(process, reader, writer)

    async def _drive(self, worker: _Worker | None) -> None:
        """Feed one worker the queue's jobs, replacing it when it dies.

        While jobs wait, the next one is sent before the current one's answer is read, so the worker finds it in
        its socket the moment it finishes, however busy the event loop is. A worker runs its jobs in order, so when
        it dies the oldest unanswered job is the one that killed it: that one fails, the others go to the new worker.
        """
        in_flight: deque[_Job] = deque()
        stopping = False
        while in_flight or not stopping:
            if not stopping and len(in_flight) < _JOBS_PER_WORKER and (not in_flight or not self._jobs.empty()):
                job = await self._jobs.get()
                if job is None:
                    stopping = True
                elif job.future.done():  # cancelled while waiting: nobody wants the answer, the slot frees now
                    self._pending -= 1
                else:
                    in_flight.append(job)
                    worker = await self._send([job], worker, in_flight)
                continue
            assert worker is not None  # every job in flight was sent to it
            failure: PoolError
            try:
                ok, value = await asyncio.wait_for(worker.answer(), self._job_timeout_s)
            except TimeoutError:
                logger.warning("a pool job ran over %s s; replacing its worker", self._job_timeout_s)
                worker.process.kill()
                failure = JobTimeoutError()
            except Exception:  # died: EOF, reset
                logger.exception("a pool worker died; failing its job, a new worker takes the others")
                failure = WorkerDiedError()
            else:
                self._finish(in_flight.popleft(), ok, value)
                continue
            await worker.stop()
            self._finish(in_flight.popleft(), False, failure)
            worker = await self._send(list(in_flight), None, in_flight)
        if worker is not None:
            await worker.stop()

    async def _send(self, jobs: list[_Job], worker: _Worker | None, in_flight: deque[_Job]) -> _Worker | None:
        """Write ``jobs`` to ``worker``, or to a new one if it is None; if none can start, they fail."""
        if not jobs:
            return worker
        if worker is None:
            try:
                worker = await self._spawn()
            except Exception:
                logger.exception("no pool worker could be started; failing %d jobs", len(jobs))
                for job in jobs:
                    in_flight.remove(job)
                    self._finish(job, False, WorkerDiedError())
                return None
        for job in jobs:
            worker.writer.write(job.frame)  # never raises: a dead worker shows up as EOF when its answer is read
        return worker

    def _finish(self, job: _Job, ok: bool, value: Any) -> None:
        self._pending -= 1
        if not job.future.done():
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)


class ThreadPool:
    """:class:`PreprocessPool`'s interface and bounds with one thread of this process instead of worker processes.

    For a server that runs one process per core: its own thread keeps the work on its core and saves the
    pickling and the socket round trip. A job cannot be timed out or isolated from crashes here, and it holds
    the interpreter lock in turns with the event loop.
    """

    def __init__(self, max_waiting: int) -> None:
        self._capacity = 1 + max_waiting
        self._pending = 0
        self._executor: ThreadPoolExecutor | None = None

    @property
    def pending(self) -> int:
        return self._pending

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="preprocess")

    def check_intake(self) -> None:
        if self._executor is None:
            raise PoolClosedError()
        if self._pending >= self._capacity:
            raise PoolFullError()

    async def run(self, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        self.check_intake()
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, functools.partial(function, *args, **kwargs)
            )
        finally:
            self._pending -= 1

    async def shutdown(self) -> None:
        """Refuse new jobs, let the accepted ones finish, then stop the thread."""
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True)
