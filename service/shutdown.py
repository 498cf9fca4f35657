"""How a server process stops.

Pre-stop drain: the first SIGTERM turns readiness to 503 while requests are still served, and reaches the server's
own handler (uvicorn's graceful shutdown) only ``shutdown_drain_s`` later. Load balancers and orchestrators that
poll readiness stop routing here during the drain, so requests stop arriving before the listening socket closes
instead of meeting a refused connection.

A worker process dies with its supervisor (:func:`die_with_parent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType

logger = logging.getLogger(__name__)

SignalHandler = Callable[[int, FrameType | None], object]

# linux/prctl.h
_PR_SET_PDEATHSIG = 1


@contextlib.contextmanager
def drain_before_sigterm(drain_s: float, begin_drain: Callable[[], None]) -> Iterator[None]:
    """While active, the first SIGTERM calls ``begin_drain`` and is passed on to the server ``drain_s`` later.

    A second SIGTERM goes to the server at once. Nothing is installed for ``drain_s`` 0, off the main thread
    (signals reach only the main thread, and the test client runs apps in another) or when no handler of the
    server's own is installed to pass the signal on to. Must be entered on the running event loop.
    """
    installed = signal.getsignal(signal.SIGTERM)
    if drain_s <= 0 or threading.current_thread() is not threading.main_thread() or not callable(installed):
        yield
        return
    server_handler: SignalHandler = installed
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle | None = None

    def start_drain() -> None:
        nonlocal timer
        begin_drain()
        timer = loop.call_later(drain_s, server_handler, signal.SIGTERM, None)

    def on_sigterm(_signum: int, _frame: FrameType | None) -> None:
        # Python runs this between two bytecodes of the main thread, possibly inside the event loop's own code:
        # only the loop's thread-safe entry point is safe to call here.
        signal.signal(signal.SIGTERM, server_handler)
        loop.call_soon_threadsafe(start_drain)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, server_handler)


def die_with_parent() -> None:
    """In a worker process of ``python -m service``: be killed when the supervisor dies (Linux).

    A supervisor killed outright cannot stop its workers; without this they would live on, holding the listening
    port, and a restarted server could not bind it. SIGKILL, as the supervisor itself received.
    """
    if multiprocessing.parent_process() is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        logger.warning("cannot tie this worker's life to its supervisor (prctl errno %d)", ctypes.get_errno())
    elif os.getppid() != multiprocessing.parent_process().pid:  # type: ignore[union-attr]
        os.kill(os.getpid(), signal.SIGKILL)  # the supervisor died before the tie was made
