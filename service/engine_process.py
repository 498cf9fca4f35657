"""The inference process: one engine (models and batchers of one device) serving every front end over a Unix socket.

Contract:

- On connect, a front end gets the :class:`Catalog`; every front end gets a new one after each reload, before the
  reload's own answer, so an admin reload answers with the models it loaded.
- Items from all front ends share the engine's batches and its bounded queues; a full queue answers the call with
  :class:`QueueFullError` (503 + Retry-After at the front end's edge), a failed batch with the batch's error.
- A front end that goes away loses only its own calls: they are cancelled, and the batcher skips their items.
- SIGTERM (or SIGINT): stop accepting connections, answer every queued item, then exit. The supervisor
  (``service.supervisor``) starts the process again when it dies any other way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import logging.config
import os
import signal
from pathlib import Path
from typing import Any

from service.config import Settings, get_settings
from service.engine import Engine, start_engine
from service.engine_wire import Answer, Catalog, FrameCheck, Message, Reload, Submit, Upstream, encode, read_message
from service.errors import InferenceFailedError, ServiceError
from service.logs import log_config
from service.telemetry import Telemetry

logger = logging.getLogger(__name__)

_PARENT_POLL_S = 0.5


class _Connections:
    """The open front-end connections and how many uploads each is reading or preparing."""

    def __init__(self) -> None:
        self.writers: dict[int, asyncio.StreamWriter] = {}
        self.upstream: dict[int, int] = {}

    def more_coming(self) -> bool:
        return any(self.upstream.values())

    def broadcast(self, message: Message) -> None:
        payload = encode(message)
        for writer in self.writers.values():
            writer.write(payload)


def _catalog(engine: Engine) -> Catalog:
    statuses = {
        name: dataclasses.replace(status, served=status.served.described() if status.served else None)
        for name, status in engine.registry.statuses.items()
    }
    return Catalog(str(engine.registry.device), statuses)


async def _answer(engine: Engine, message: Submit | Reload | FrameCheck, connections: _Connections) -> Answer:
    results: Any = None
    error: Exception | None = None
    try:
        if isinstance(message, Reload):
            results = await engine.registry.reload()
            connections.broadcast(_catalog(engine))
        elif isinstance(message, FrameCheck):
            results = await engine.is_newest(message.stream, message.frame, admit=message.admit)
        else:
            batcher: Any = engine.batcher if message.kind == "digit" else engine.line_batcher
            snapshot = engine.registry.models
            items = [dataclasses.replace(item, models=snapshot) for item in message.items]  # type: ignore[type-var]
            results = await batcher.submit_many(items)
    except ServiceError as exc:
        error = exc
    except Exception:
        logger.exception("a call from a front end failed")
        error = InferenceFailedError()
    return Answer(message.call_id, results, error, engine.queue_depth)


async def _serve_connection(
    engine: Engine, connections: _Connections, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    key = id(writer)
    connections.writers[key] = writer
    calls: set[asyncio.Task[None]] = set()

    async def run(message: Submit | Reload | FrameCheck) -> None:
        answer = await _answer(engine, message, connections)
        writer.write(encode(answer))

    writer.write(encode(_catalog(engine)))
    try:
        while True:
            message = await read_message(reader)
            if isinstance(message, Upstream):
                connections.upstream[key] = message.count
            elif isinstance(message, Submit | Reload | FrameCheck):
                task = asyncio.create_task(run(message))
                calls.add(task)
                task.add_done_callback(calls.discard)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        # The front end has gone: nobody can read these answers, and their queued items need not be computed.
        for task in calls:
            task.cancel()
        connections.writers.pop(key, None)
        connections.upstream.pop(key, None)
        writer.close()


async def serve(settings: Settings, socket_path: Path, stopping: asyncio.Event) -> None:
    """Serve the engine at ``socket_path`` until ``stopping`` is set, then answer everything queued and return."""
    connections = _Connections()
    engine = await start_engine(
        settings,
        Telemetry(),
        more_coming=connections.more_coming,
        on_reload=lambda _changes: connections.broadcast(_catalog(engine)),
    )
    socket_path.unlink(missing_ok=True)
    server = await asyncio.start_unix_server(
        lambda reader, writer: _serve_connection(engine, connections, reader, writer), socket_path
    )
    logger.info("inference process %d ready at %s", os.getpid(), socket_path)
    await stopping.wait()
    server.close()
    await engine.stop()
    for writer in list(connections.writers.values()):
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
    logger.info("inference process stopped: every queued item was answered")


async def _serve_until_signalled(socket_path: Path) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    parent = os.getppid()

    async def stop_with_parent() -> None:
        # A supervisor killed outright cannot stop this process: it stops itself instead of serving nobody. Not
        # prctl(PR_SET_PDEATHSIG) as for the front ends: a restarted inference process is started by the
        # supervisor's watcher thread, whose exit would kill it, and this way the queue is still answered.
        while os.getppid() == parent:
            await asyncio.sleep(_PARENT_POLL_S)
        logger.error("the supervising process has gone; stopping")
        stopping.set()

    watch = asyncio.create_task(stop_with_parent())
    await serve(get_settings(), socket_path, stopping)
    watch.cancel()


def main(socket_path: str) -> None:
    """The process entry point (``multiprocessing`` target): logging as the front ends log, then serve until
    SIGTERM or SIGINT."""
    logging.config.dictConfig(log_config(get_settings()))
    asyncio.run(_serve_until_signalled(Path(socket_path)))
