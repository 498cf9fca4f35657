"""The work every peer server does per upload, written once so the peers differ only in their serving stack.

An upload's bytes go through the service's own digit preprocessing (:func:`imaging.digit.prepare_digit`, with the
service's pixel limit); the store's digit classifiers (latest versions, verified and loaded through ``contract``,
frozen like the service's graphs) each give calibrated probabilities, and ``contract.ensemble`` combines them.
The answer has the shape of the service's ``predictions`` and ``ensemble`` fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from typing_extensions import TypedDict

from contract import ModelStore
from contract.ensemble import calibrated_log_probs, ensemble_probs
from contract.torchscript import ScriptModule, load_torchscript, optimize_for_inference
from imaging.decoding import DecodeLimits
from imaging.digit import prepare_digit
from service.config import get_settings

# The classifiers the service's /predict answers with by default (its digit check is not part of the answer).
PEER_MODELS = ("mlp", "lenet5", "cnn")


class ModelAnswer(TypedDict):
    model: str
    version: int
    label: int
    confidence: float
    probabilities: list[float]


class EnsembleAnswer(TypedDict):
    label: int
    confidence: float
    probabilities: list[float]
    models: list[str]


class DigitAnswer(TypedDict):
    predictions: list[ModelAnswer]
    ensemble: EnsembleAnswer


@dataclass(frozen=True)
class _Classifier:
    name: str
    version: int
    temperature: float
    ensemble_weight: float
    module: ScriptModule


def _best(probs: torch.Tensor) -> tuple[list[int], list[float], list[list[float]]]:
    confidence, label = probs.max(dim=1)
    return label.tolist(), confidence.tolist(), probs.tolist()


class DigitPipeline:
    """Bytes to a prepared ``(1, 28, 28)`` image (:meth:`prepare`), and prepared images to answers (:meth:`predict`)."""

    def __init__(self, store_dir: Path, max_image_pixels: int) -> None:
        store = ModelStore(store_dir)
        self._limits = DecodeLimits(max_image_pixels=max_image_pixels)
        self._classifiers: list[_Classifier] = []
        for name in PEER_MODELS:
            verified = store.read_verified(name, store.resolve(name))
            manifest = verified.manifest
            module = optimize_for_inference(load_torchscript(verified.model_bytes))
            self._classifiers.append(
                _Classifier(name, manifest.version, manifest.temperature, manifest.ensemble_weight, module)
            )

    @classmethod
    def from_settings(cls) -> DigitPipeline:
        """The service's store and pixel limit (``DIGITS_MODEL_STORE_DIR``, ``DIGITS_MAX_IMAGE_PIXELS``)."""
        settings = get_settings()
        return cls(settings.model_store_dir, settings.max_image_pixels)

    def prepare(self, data: bytes) -> npt.NDArray[np.float32]:
        """The model input for ``data``; raises :class:`imaging.errors.ImagingError` for an unusable image."""
        return prepare_digit(data, self._limits).pixels

    def predict(self, images: Sequence[npt.NDArray[np.float32]]) -> list[DigitAnswer]:
        """One answer per prepared image, in order; every model runs once on the whole batch."""
        batch = torch.from_numpy(np.stack(images))  # (N, 1, 28, 28)
        per_model: list[list[ModelAnswer]] = []
        log_probs: list[torch.Tensor] = []
        with torch.inference_mode():
            for classifier in self._classifiers:
                model_log_probs = calibrated_log_probs(classifier.module(batch), classifier.temperature)
                log_probs.append(model_log_probs)
                per_model.append(
                    [
                        ModelAnswer(
                            model=classifier.name,
                            version=classifier.version,
                            label=label,
                            confidence=confidence,
                            probabilities=row,
                        )
                        for label, confidence, row in zip(*_best(model_log_probs.exp()), strict=True)
                    ]
                )
            combined = ensemble_probs(log_probs, [classifier.ensemble_weight for classifier in self._classifiers])
        names = [classifier.name for classifier in self._classifiers]
        return [
            DigitAnswer(
                predictions=[answers[index] for answers in per_model],
                ensemble=EnsembleAnswer(label=label, confidence=confidence, probabilities=row, models=names),
            )
            for index, (label, confidence, row) in enumerate(zip(*_best(combined), strict=True))
        ]
