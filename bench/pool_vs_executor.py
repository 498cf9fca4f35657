"""The preprocessing pool alone against the standard library's answer: is the hand-made pool worth its code?

``python -m bench.pool_vs_executor`` runs the same jobs (``prepare_digit`` on the benchmark's canvas and digit
uploads) through :class:`service.preprocess_pool.PreprocessPool` and through
:class:`concurrent.futures.ProcessPoolExecutor` bounded by an :class:`asyncio.Semaphore` (the same number of
workers, the same fork server preload, the same ``mallopt`` at worker start, the same backlog bound). Each
simulated client spends ``LOOP_WORK_MS`` of pure-Python CPU on the event loop per request (what HTTP parsing,
routing and the response cost the real server), then awaits its job. Rounds interleave the two pools so a slow
spell of a noisy machine hits both; the output is ``bench/results/preprocess_pool.json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import statistics
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Any

from bench.run_bench import RESULTS_DIR, bench_images
from imaging.decoding import DecodeLimits
from imaging.digit import PreparedDigit, prepare_digit
from service.preprocess_pool import PreprocessPool, keep_freed_memory
from service.state import PRELOAD

logger = logging.getLogger("bench")

LIMITS = DecodeLimits(max_image_pixels=25_000_000)
WORKERS = 2
MAX_WAITING = 128
CLIENTS = (8, 64)
ROUNDS = 3
DURATION_S = 5.0
# Before timing, every worker must have started and imported its modules (a new worker imports the main module).
WARM_UP_S = 3.0
# Pure-Python work per request on the event loop, holding the GIL, as the server's own request handling does.
LOOP_WORK_MS = 0.8

Submit = Callable[[bytes], Awaitable[PreparedDigit]]


def _busy(milliseconds: float) -> None:
    deadline = time.perf_counter() + milliseconds / 1e3
    while time.perf_counter() < deadline:
        pass


async def _drive(submit: Submit, data: bytes, clients: int, duration_s: float) -> dict[str, float]:
    """``clients`` closed-loop callers for ``duration_s``: jobs per second and latency percentiles of the job."""
    latencies: list[float] = []
    deadline = time.perf_counter() + duration_s

    async def client() -> None:
        while time.perf_counter() < deadline:
            _busy(LOOP_WORK_MS)
            started = time.perf_counter()
            await submit(data)
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0)

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - began
    cuts = statistics.quantiles(latencies, n=100)
    return {"jobs_per_s": len(latencies) / elapsed, "p50_ms": cuts[49] * 1e3, "p99_ms": cuts[98] * 1e3}


async def _measure(submit: Submit, data: bytes, clients: int) -> dict[str, float]:
    await _drive(submit, data, clients, WARM_UP_S)
    return await _drive(submit, data, clients, DURATION_S)


async def _hand_made(data: bytes, clients: int) -> dict[str, float]:
    pool = PreprocessPool(WORKERS, MAX_WAITING, preload=PRELOAD)
    await pool.start()
    try:
        return await _measure(lambda upload: pool.run(prepare_digit, upload, LIMITS), data, clients)
    finally:
        await pool.shutdown()


async def _executor(data: bytes, clients: int) -> dict[str, float]:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))
    room = asyncio.Semaphore(WORKERS + MAX_WAITING)
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(WORKERS, mp_context=context, initializer=keep_freed_memory) as executor:

        async def submit(upload: bytes) -> PreparedDigit:
            async with room:
                return await loop.run_in_executor(executor, partial(prepare_digit, upload, LIMITS))

        return await _measure(submit, data, clients)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    pools = {"PreprocessPool": _hand_made, "ProcessPoolExecutor + Semaphore": _executor}
    rounds: list[dict[str, Any]] = []
    for round_index in range(ROUNDS):
        for upload, data in bench_images().items():
            for clients in CLIENTS:
                for name, run in pools.items():
                    result = asyncio.run(run(data, clients))
                    rounds.append({"round": round_index, "upload": upload, "clients": clients, "pool": name, **result})
                    logger.info("%s", rounds[-1])
    medians = {
        f"{upload} | {clients} clients | {name}": {
            key: statistics.median(r[key] for r in rounds if (r["upload"], r["clients"], r["pool"]) == cell)
            for key in ("jobs_per_s", "p50_ms", "p99_ms")
        }
        for cell in dict.fromkeys((r["upload"], r["clients"], r["pool"]) for r in rounds)
        for upload, clients, name in [cell]
    }
    settings = {
        "workers": WORKERS,
        "max_waiting": MAX_WAITING,
        "loop_work_ms": LOOP_WORK_MS,
        "warm_up_s": WARM_UP_S,
        "duration_s": DURATION_S,
    }
    output = {"settings": settings, "medians": medians, "rounds": rounds}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "preprocess_pool.json").write_text(json.dumps(output, indent=2) + "\n")


if __name__ == "__main__":
    main()
