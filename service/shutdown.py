"""Pre-stop drain: the first SIGTERM turns readiness to 503 while requests are still served, and reaches the server's
own handler (uvicorn's graceful shutdown) only ``shutdown_drain_s`` later.

Load balancers and orchestrators that poll readiness stop routing here during the drain, so requests stop arriving
before the listening socket closes instead of meeting a refused connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

logger = logging.getLogger(__name__)

SignalHandler = Callable[[int, FrameType | None], object]


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
