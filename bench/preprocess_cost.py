"""What one upload costs to prepare: :func:`imaging.digit.prepare_digit` timed on the benchmark's two
uploads and on a 4000x3000 phone-photo JPEG, in this process, one call at a time (as in one worker process).

Writes ``bench/results/preprocess_cost.json``; the README's preprocessing costs come from it. Run with
``python -m bench.preprocess_cost``.
"""

from __future__ import annotations

import io
import json
import logging
import statistics
import time
from collections.abc import Callable
from functools import partial

from bench.run_bench import RESULTS_DIR, bench_images
from harness.images import photo_of_paper
from imaging.decoding import DecodeLimits, decode_image
from imaging.digit import prepare_digit

logger = logging.getLogger("bench")

LIMITS = DecodeLimits(max_image_pixels=25_000_000)
PHONE_SIZE = (4000, 3000)
ROUNDS = 7


def _phone_jpeg() -> bytes:
    buffer = io.BytesIO()
    photo_of_paper(PHONE_SIZE).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def median_ms(run: Callable[[], object], repeats: int) -> float:
    """Median over ``ROUNDS`` of the mean time of ``repeats`` calls, after one warm-up call."""
    run()
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(repeats):
            run()
        rounds.append((time.perf_counter() - started) / repeats * 1e3)
    return statistics.median(rounds)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    uploads = {**bench_images(), "4000x3000 phone JPEG": _phone_jpeg()}
    results: dict[str, dict[str, float]] = {}
    for name, data in uploads.items():
        repeats = 3 if name.endswith("JPEG") else 100
        results[name] = {
            "prepare_digit_ms": median_ms(partial(prepare_digit, data, LIMITS), repeats),
            "full_decode_ms": median_ms(partial(decode_image, data, LIMITS), repeats),
        }
        logger.info("%s: %s", name, results[name])
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "preprocess_cost.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
