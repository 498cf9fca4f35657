"""What the model comparison measured: the result types the report renders, and the statistics behind them.

:mod:`evaluation.run` fills a :class:`Comparison`; :mod:`evaluation.report` renders it. Both import this
module, so neither depends on the other's internals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from contract import Manifest
from training.metrics import ReliabilityBin

ENSEMBLE = "ensemble"
# The two-sided 95 % quantile of the standard normal distribution.
Z_95 = 1.959963984540054
THROUGHPUT_BATCH = 64


def wilson_interval(successes: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927); well-behaved near 0 and 1, unlike Wald's."""
    if total <= 0:
        return 0.0, 1.0
    p = successes / total
    denominator = 1 + z**2 / total
    centre = (p + z**2 / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z**2 / (4 * total**2)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (a binomial test of b against b + c at 1/2)."""
    n = only_first + only_second
    if n == 0:
        return 1.0
    tail = math.fsum(math.comb(n, k) for k in range(min(only_first, only_second) + 1)) / math.ldexp(1.0, n)
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class Speed:
    """Median batch-1 latency and batch-64 throughput on one device."""

    latency_ms: float
    throughput_per_s: float


@dataclass(frozen=True)
class Column:
    """One column of the report: a model or the ensemble, and everything measured for it."""

    name: str
    parameters: int
    size_bytes: int
    macs: int
    test: dict[str, Any]
    reliability: list[ReliabilityBin]
    predictions: torch.Tensor
    usps_correct: int
    robustness: dict[str, list[float]]
    cpu: Speed
    cuda: Speed | None


@dataclass(frozen=True)
class Agreement:
    """How the single models agree on the test set, and McNemar's test of the ensemble against the best of them."""

    samples: int
    all_agree: int
    accuracy_when_agree: float
    accuracy_when_disagree: dict[str, float]
    best_single: str
    ensemble_only: int
    best_only: int
    p_value: float


@dataclass(frozen=True)
class Comparison:
    """Everything the report shows; the renderers of :mod:`evaluation.report` are pure functions of it."""

    manifests: list[Manifest]
    columns: list[Column]
    agreement: Agreement
    test_images: int
    robustness_images: int
    usps_images: int
    usps_refused: int
    seed: int
    timing_threads: int
    cpu_name: str
    # The 1-minute load average just before timing: other work on the machine slows the timings down.
    load_average: float
    latency_runs: int
    throughput_runs: int
    cuda_device: str | None
