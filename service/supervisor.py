"""The processes of ``python -m service``: the inference process and the HTTP workers (``DIGITS_*`` settings).

With ``DIGITS_ENGINE=process`` (the default) this process starts the inference process, starts it again
whenever it dies, and runs ``DIGITS_WORKERS`` uvicorn workers as its front ends (uvicorn's supervisor restarts a
worker that dies). On SIGTERM the workers finish their requests first, then the inference process answers what is
queued and exits, and this process exits with 0. With ``DIGITS_ENGINE=embedded`` every worker holds its own models
and batchers.
"""

from __future__ import annotations

import contextlib
import logging
import logging.config
import math
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path

import uvicorn
from uvicorn.supervisors import Multiprocess

from service.config import Settings, get_settings
from service.http_protocol import OneWriteH11Protocol
from service.logs import log_config

logger = logging.getLogger("service")

# How long a stopping inference process may take beyond the workers' grace period before it is killed.
_ENGINE_STOP_MARGIN_S = 10.0


def _inference_main(socket_path: str) -> None:
    # Imported here, in the inference process: the supervisor itself never loads torch. (A package's __main__
    # cannot hold a process target: a spawned child does not import it.)
    from service import engine_process

    engine_process.main(socket_path)


@contextlib.contextmanager
def inference_process(settings: Settings, socket_path: Path) -> Iterator[None]:
    """Run the inference process at ``socket_path``, started again whenever it exits, while the context is open."""
    context = multiprocessing.get_context("spawn")
    closing = threading.Event()

    def start() -> BaseProcess:
        process = context.Process(target=_inference_main, args=(str(socket_path),), name="digits-inference")
        process.start()
        return process

    process = start()

    def keep_alive() -> None:
        nonlocal process
        while not closing.is_set():
            wait([process.sentinel], timeout=0.5)
            if not process.is_alive() and not closing.is_set():
                logger.error("the inference process exited with code %s; starting it again", process.exitcode)
                process = start()

    watcher = threading.Thread(target=keep_alive, name="inference-supervisor", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        closing.set()
        watcher.join()
        process.terminate()  # SIGTERM: answer what is queued, then exit
        process.join(settings.shutdown_timeout_s + _ENGINE_STOP_MARGIN_S)
        if process.is_alive():
            process.kill()


class _FrontEnds(Multiprocess):
    """uvicorn's supervisor of worker processes, stopping as one server process stops.

    uvicorn's own keeps its copy of the listening socket open until every worker has exited, so connections made
    while the workers finish their requests wait in the kernel's queue, unanswered; and it ignores a second SIGTERM.
    Here the socket is closed once the workers have closed theirs (new connections are refused, as from one
    process), and a further SIGTERM reaches the workers, which then skip the rest of their drain.
    """

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        signal.signal(signal.SIGTERM, lambda _signum, _frame: super(_FrontEnds, self).terminate_all())
        super().terminate_all()


def _run_uvicorn(app_factory: str, settings: Settings, *, in_workers: bool) -> None:
    """Serve under uvicorn: in worker processes when ``in_workers`` or more than one is configured, else here."""
    config = uvicorn.Config(
        app_factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.worker_count,
        log_level=settings.log_level,
        log_config=log_config(settings),
        access_log=settings.access_log,
        limit_concurrency=settings.limit_concurrency,
        backlog=settings.backlog,
        http=OneWriteH11Protocol if settings.http_implementation == "h11" else settings.http_implementation,
        # The stock asyncio loop: uvloop is not a dependency, and this pins what was measured.
        loop="asyncio",
        lifespan="on",
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
    )
    if in_workers or config.workers > 1:
        # uvicorn makes the socket with protocol 0, and asyncio turns Nagle's algorithm off (TCP_NODELAY) only on
        # connections of a socket that says TCP: each response's last segment then waited about 40 ms for the
        # client's delayed ACK. Re-wrapped, the socket reports its protocol (6, TCP).
        listener = socket.socket(fileno=config.bind_socket().detach())
        _FrontEnds(config, sockets=[listener]).run()
    else:
        uvicorn.Server(config).run()


def serve(app_factory: str, *, with_inference_process: bool = True) -> None:
    """Run the app built by ``app_factory`` (``module:function``) with the server options from the settings, as
    front ends of one inference process unless ``DIGITS_ENGINE=embedded`` or ``with_inference_process`` is off."""
    settings = get_settings()
    if not with_inference_process or settings.engine == "embedded" or settings.engine_socket is not None:
        _run_uvicorn(app_factory, settings, in_workers=False)
        return
    logging.config.dictConfig(log_config(settings))
    # One private directory per run (only this user can open it): the socket, and the metric files that
    # prometheus-client's multiprocess mode sums over all the processes.
    runtime = Path(tempfile.mkdtemp(prefix="digits-"))
    metrics = runtime / "metrics"
    metrics.mkdir()
    # Every process started from here reads its settings and this variable from the environment.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    os.environ["DIGITS_ENGINE_SOCKET"] = str(runtime / "engine.sock")
    get_settings.cache_clear()
    try:
        with inference_process(settings, runtime / "engine.sock"):
            # Front ends in processes of their own even when there is one: this process serves no request, so
            # it holds no metrics of its own, and it outlives any front end or inference process it supervises.
            _run_uvicorn(app_factory, get_settings(), in_workers=True)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
