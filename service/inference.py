"""One batch of prepared digits through the models: stack, copy to the device, forward, calibrate, ensemble, and
the digit check's verdict on whether each image is one handwritten digit at all.

:class:`BatchPredictor` is the batch function the micro-batcher calls in its inference thread. Each model runs
once per batch, on exactly the rows whose request selected it, so requests asking for different subsets still
share one batch and no forward pass is wasted. Requests are grouped by the model snapshot they started with, so
a batch that straddles a hot reload answers each request with the versions it began on.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from contract import CHECK_CLASSES
from contract.ensemble import calibrated_log_probs, ensemble_probs
from service.registry import LoadedModel, ModelSet
from service.telemetry import Telemetry


@dataclass(frozen=True)
class DigitRequest:
    """One request's work: the ``(1, 28, 28)`` image, the snapshot it started with and the models it chose."""

    image: torch.Tensor
    models: ModelSet
    selected: tuple[str, ...]


@dataclass(frozen=True)
class ClassProbabilities:
    label: int
    confidence: float
    probabilities: list[float]


@dataclass(frozen=True)
class ModelOutput:
    """One model's answer: calibrated probabilities, and the raw logits the model itself returned."""

    name: str
    version: int
    result: ClassProbabilities
    logits: list[float]


@dataclass(frozen=True)
class CheckResult:
    """The digit check's verdict: ``reason`` is None for one digit, else the likelier of the other two classes."""

    name: str
    version: int
    one_digit: bool
    reason: str | None
    score: float
    threshold: float


@dataclass(frozen=True)
class DigitPrediction:
    """Per-model results in the order the request selected them, their ensemble, the batch's size, when the
    batch started (``time.perf_counter()``), which ends the request's wait in the queue, and the digit check's
    verdict (None when no check is served)."""

    outputs: list[ModelOutput]
    ensemble: ClassProbabilities
    batch_size: int
    batch_started_s: float
    check: CheckResult | None = None


def _class_probabilities(probs: torch.Tensor) -> list[ClassProbabilities]:
    """``(N, C)`` probabilities to one :class:`ClassProbabilities` per row (one bulk ``tolist`` each)."""
    confidence, label = probs.max(dim=1)
    return [
        ClassProbabilities(label=lab, confidence=conf, probabilities=row)
        for lab, conf, row in zip(label.tolist(), confidence.tolist(), probs.tolist(), strict=True)
    ]


def check_results(check: LoadedModel, probs: torch.Tensor) -> list[CheckResult]:
    """``(N, 3)`` calibrated check probabilities to verdicts: one digit when its probability reaches the threshold."""
    threshold = check.manifest.pass_threshold or 0.5
    results = []
    for row in probs.tolist():
        score = row[0]
        passed = score >= threshold
        other = 1 + max(range(len(row) - 1), key=lambda index: row[1 + index])
        reason = None if passed else CHECK_CLASSES[other]
        results.append(CheckResult(check.name, check.version, passed, reason, score, threshold))
    return results


def _rows(values: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """``values[rows]``, without the copy in the usual case of every row in order."""
    return values if rows == list(range(values.shape[0])) else values[rows]


class BatchPredictor:
    """Callable batch function: ``list[DigitRequest]`` to ``list[DigitPrediction]`` in the same order."""

    def __init__(
        self,
        device: torch.device,
        *,
        max_batch_size: int,
        autocast_fp16: bool = False,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.device = device
        self._max_batch_size = max_batch_size
        self._autocast = autocast_fp16 and device.type == "cuda"
        self._telemetry = telemetry
        # Page-locked staging buffer for host-to-GPU copies, allocated on first use in the inference thread.
        self._staging: torch.Tensor | None = None

    def __call__(self, requests: Sequence[DigitRequest]) -> list[DigitPrediction]:
        started = time.perf_counter()
        if self._telemetry is not None:
            self._telemetry.batch_size.observe(len(requests))
        results: dict[int, DigitPrediction] = {}
        groups: dict[int, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(id(request.models), []).append(index)
        with torch.inference_mode():
            for indices in groups.values():
                group = [requests[i] for i in indices]
                for index, prediction in zip(indices, self._predict_group(group, len(requests), started), strict=True):
                    results[index] = prediction
        return [results[index] for index in range(len(requests))]

    def _to_device(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.device.type != "cuda":
            return torch.stack(list(images))  # (N, 1, 28, 28)
        if self._staging is None:
            shape = (self._max_batch_size, *images[0].shape)
            self._staging = torch.empty(shape, dtype=torch.float32, pin_memory=True)
        staging = self._staging[: len(images)]
        torch.stack(list(images), out=staging)
        # Safe to reuse the buffer next batch: this batch's results are copied back synchronously first.
        return staging.to(self.device, non_blocking=True)

    def _forward(self, loaded: LoadedModel, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's ``(N, C)`` logits and calibrated log-probabilities, both on the CPU."""
        model_name = loaded.name
        started = time.perf_counter()
        precision = torch.autocast("cuda", dtype=torch.float16) if self._autocast else contextlib.nullcontext()
        with precision:
            logits = loaded(batch)  # (N, C)
        log_probs = calibrated_log_probs(logits, loaded.manifest.temperature).cpu()
        logits = logits.float().cpu()
        if self._telemetry is not None:
            self._telemetry.inference_seconds.labels(model_name).observe(time.perf_counter() - started)
        return logits, log_probs

    def _predict_group(self, group: Sequence[DigitRequest], batch_size: int, started: float) -> list[DigitPrediction]:
        models = group[0].models
        batch = self._to_device([request.image for request in group])
        # Per model: its (rows, C) logits and log-probabilities and, for each request index, its row in them.
        logits: dict[str, list[list[float]]] = {}
        log_probs: dict[str, torch.Tensor] = {}
        row_of: dict[str, dict[int, int]] = {}
        for name in models.classifiers():
            rows = [i for i, request in enumerate(group) if name in request.selected]
            if not rows:
                continue
            inputs = batch if len(rows) == len(group) else batch[torch.tensor(rows, device=batch.device)]
            model_logits, log_probs[name] = self._forward(models[name], inputs)
            logits[name] = model_logits.tolist()
            row_of[name] = {request_index: row for row, request_index in enumerate(rows)}
        per_model = {name: _class_probabilities(lp.exp()) for name, lp in log_probs.items()}

        ensembles: dict[int, ClassProbabilities] = {}
        by_selection: dict[tuple[str, ...], list[int]] = {}
        for i, request in enumerate(group):
            by_selection.setdefault(request.selected, []).append(i)
        for selected, members in by_selection.items():
            member_log_probs = [_rows(log_probs[name], [row_of[name][i] for i in members]) for name in selected]
            weights = [models[name].manifest.ensemble_weight for name in selected]
            combined = _class_probabilities(ensemble_probs(member_log_probs, weights))
            ensembles.update(zip(members, combined, strict=True))
        checks: list[CheckResult | None] = [None] * len(group)
        if models.check is not None:
            checks = list(check_results(models.check, self._forward(models.check, batch)[1].exp()))

        return [
            DigitPrediction(
                outputs=[
                    ModelOutput(
                        name, models[name].version, per_model[name][row_of[name][i]], logits[name][row_of[name][i]]
                    )
                    for name in request.selected
                ],
                ensemble=ensembles[i],
                batch_size=batch_size,
                batch_started_s=started,
                check=checks[i],
            )
            for i, request in enumerate(group)
        ]
