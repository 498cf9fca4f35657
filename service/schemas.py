"""Pydantic response models of every endpoint, the error model, and their OpenAPI documentation with examples."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contract import NUM_CLASSES, ModelKind, TensorSpec
from service import errors

_EXAMPLE_PROBABILITIES: list[Any] = [0.001, 0.002, 0.004, 0.003, 0.001, 0.002, 0.001, 0.97, 0.006, 0.01]
_EXAMPLE_SHA256 = "9f2c1e0b7a6d5c4b3a29181706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3"
_EXAMPLE_MODEL_INFO: dict[str, Any] = {
    "name": "cnn",
    "version": 2,
    "state": "serving",
    "problems": [],
    "created": "2025-01-01T12:00:00Z",
    "sha256": _EXAMPLE_SHA256,
    "size_bytes": 561234,
    "parameters": 130000,
    "torch_version": "2.14.1",
    "kind": "digit_classifier",
    "input": {
        "name": "input__0",
        "dims": [1, 28, 28],
        "dtype": "float32",
        "description": "grey image in [0, 1], white digit on black",
    },
    "output": {
        "name": "output__0",
        "dims": [10],
        "dtype": "float32",
        "description": "logits for digits 0-9",
    },
    "labels": list(range(NUM_CLASSES)),
    "temperature": 1.2,
    "ensemble_weight": 1.0,
    "metrics": {"test_accuracy": 0.993},
    "training_config": {"epochs": 10, "lr": 0.001, "seed": 0},
}


class ErrorResponse(BaseModel):
    """Every error: one short, fixed sentence that says what to do."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"detail": errors.InvalidImageError.default_detail}]})

    detail: str


Label = Annotated[int, Field(ge=0, lt=NUM_CLASSES, description="the most probable digit")]
Confidence = Annotated[float, Field(ge=0, le=1, description="probability of the label")]
Probabilities = Annotated[
    list[float],
    Field(min_length=NUM_CLASSES, max_length=NUM_CLASSES, description="calibrated probabilities of digits 0-9"),
]


class ModelPrediction(BaseModel):
    model: str
    version: int = Field(gt=0)
    label: Label
    confidence: Confidence
    probabilities: Probabilities


class EnsemblePrediction(BaseModel):
    """Weighted geometric mean of the selected models' calibrated probabilities (see ``contract.ensemble``)."""

    label: Label
    confidence: Confidence
    probabilities: Probabilities
    models: list[str]


class DigitCheck(BaseModel):
    """Whether the image looks like one handwritten digit. When it does not, the labels above are guesses: the
    models only know digits. Several digits are better read one at a time (crop each digit)."""

    one_digit: bool = Field(description="the image looks like one handwritten digit")
    reason: Literal["several digits", "not a digit"] | None = Field(
        default=None, description="present when one_digit is false: what the image looks like instead"
    )
    score: float = Field(ge=0, le=1, description="calibrated probability that the image is one handwritten digit")
    threshold: float = Field(ge=0, le=1, description="the score an image needs to pass as one digit")
    model: str
    version: int = Field(gt=0)


class Timings(BaseModel):
    read_ms: float = Field(description="receiving and parsing the upload")
    preprocess_ms: float = Field(description="decoding and preprocessing, including waiting for a thread")
    inference_ms: float = Field(description="waiting for a batch and running it")
    total_ms: float


class PredictionResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "4f1b9c2de0a84d7e9b6c3a5f1e2d3c4b",
                    "predictions": [
                        {
                            "model": "mlp",
                            "version": 1,
                            "label": 7,
                            "confidence": 0.97,
                            "probabilities": _EXAMPLE_PROBABILITIES,
                        }
                    ],
                    "ensemble": {
                        "label": 7,
                        "confidence": 0.97,
                        "probabilities": _EXAMPLE_PROBABILITIES,
                        "models": ["mlp"],
                    },
                    "digit_check": {
                        "one_digit": True,
                        "score": 0.998,
                        "threshold": 0.35,
                        "model": "check",
                        "version": 1,
                    },
                    "batch_size": 4,
                    "timings_ms": {"read_ms": 0.1, "preprocess_ms": 0.6, "inference_ms": 3.2, "total_ms": 4.0},
                }
            ]
        }
    )

    request_id: str
    predictions: list[ModelPrediction] = Field(description="one per selected model, in the requested order")
    ensemble: EnsemblePrediction
    digit_check: DigitCheck | None = Field(
        default=None, description="whether the image is one handwritten digit (absent when no digit check is served)"
    )
    batch_size: int = Field(gt=0, description="requests answered by the same batch")
    timings_ms: Timings
    image_png_base64: str | None = Field(
        default=None, description="with debug=true: the 28x28 grey image the models saw, as a base64 PNG"
    )


_EXAMPLE_READ_PROBABILITIES: list[Any] = [0.001, 0.001, 0.991, 0.002, 0.0, 0.001, 0.001, 0.002, 0.001, 0.0]


class ReadDigitResult(BaseModel):
    label: Label
    confidence: Confidence
    probabilities: Probabilities
    box: list[float] = Field(
        min_length=4, max_length=4, description="x0, y0, x1, y1 in the uploaded image's pixels, after EXIF orientation"
    )
    image_png_base64: str | None = Field(
        default=None, description="with debug=true: this digit's ink as an MNIST-style 28x28 grey PNG, base64"
    )


class ReaderInfo(BaseModel):
    name: str
    version: int = Field(gt=0)


class ReadResponse(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "request_id": "4f1b9c2de0a84d7e9b6c3a5f1e2d3c4b",
                    "text": "2",
                    "confidence": 0.98,
                    "digits": [
                        {
                            "label": 2,
                            "confidence": 0.991,
                            "probabilities": _EXAMPLE_READ_PROBABILITIES,
                            "box": [12.0, 8.0, 64.0, 80.0],
                        }
                    ],
                    "model": {"name": "reader", "version": 1},
                    "batch_size": 1,
                    "timings_ms": {"read_ms": 0.1, "preprocess_ms": 2.4, "inference_ms": 3.1, "total_ms": 5.6},
                }
            ]
        },
    )

    request_id: str
    text: str = Field(pattern=r"^[0-9]*$", description="the digits read, left to right")
    confidence: float = Field(
        ge=0,
        le=1,
        description="probability that the whole string is right (the best CTC path's probability through the "
        "reader's string calibration, fitted on validation lines)",
    )
    digits: list[ReadDigitResult] = Field(description="one per character of text, in the same order")
    model: ReaderInfo
    batch_size: int = Field(gt=0, description="lines read by the same batch")
    timings_ms: Timings
    line_png_base64: str | None = Field(
        default=None, description="with debug=true: the normalised line the reader saw (32 px high), as a base64 PNG"
    )


class ModelInfo(BaseModel):
    """One served model: its manifest from the store and how the registry chose it."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={"examples": [_EXAMPLE_MODEL_INFO]},
    )

    name: str
    version: int
    state: Literal["serving", "fallback"] = Field(
        description="fallback: a newer or the requested version was refused (see problems)"
    )
    problems: list[str] = Field(description="why newer versions were refused")
    created: datetime
    sha256: str
    size_bytes: int
    parameters: int
    torch_version: str
    kind: ModelKind = Field(
        description="digit_classifier: served by /predict; line_reader: served by /read; digit_check: answers "
        "/predict's digit_check"
    )
    input: TensorSpec
    output: TensorSpec
    labels: list[int]
    temperature: float
    ensemble_weight: float
    pass_threshold: float | None = Field(default=None, description="digit check only: the score that passes")
    metrics: dict[str, Any]
    training_config: dict[str, Any]


class UnavailableModel(BaseModel):
    """A configured model with no servable version."""

    name: str
    requested_version: int | Literal["latest"]
    problems: list[str]


class ModelsResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "device": "cpu",
                    "models": [_EXAMPLE_MODEL_INFO],
                    "unavailable": [
                        {
                            "name": "mlp",
                            "requested_version": 3,
                            "problems": ["model 'mlp' has no version 3; available: [1, 2]"],
                        }
                    ],
                }
            ]
        }
    )

    device: str
    models: list[ModelInfo]
    unavailable: list[UnavailableModel]


class ModelChangeInfo(BaseModel):
    name: str
    old_version: int | None
    new_version: int | None


class ReloadResponse(ModelsResponse):
    changes: list[ModelChangeInfo] = Field(description="models whose served version changed")


class LiveResponse(BaseModel):
    status: Literal["alive"] = "alive"


class ReadyResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"status": "ready", "models": ["cnn", "mlp"], "versions": {"cnn": 2, "mlp": 1}}]
        }
    )

    status: Literal["ready"] = "ready"
    models: list[str] = Field(description="models being served")
    versions: dict[str, int] = Field(
        description="the version served of each model: replicas behind one balancer that differ are mid-rollout"
    )


_RETRY_AFTER_HEADER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}},
}


def error_responses(
    *error_classes: type[errors.ServiceError], model: type[BaseModel] = ErrorResponse, key: str = "detail"
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the errors a route can raise: the error model, one example per class.

    ``model`` and ``key`` describe the error body: ``{"detail": ...}`` here, ``{"error": ...}`` under ``/v2``.
    """
    documented: dict[int | str, dict[str, Any]] = {}
    for cls in error_classes:
        entry = documented.setdefault(
            cls.status_code,
            {"model": model, "description": cls.default_detail, "content": {"application/json": {}}},
        )
        examples = entry["content"]["application/json"].setdefault("examples", {})
        examples[cls.__name__] = {"value": {key: cls.default_detail}}
        if "Retry-After" in cls.headers:
            entry["headers"] = _RETRY_AFTER_HEADER
    return documented


UPLOAD_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": "one image: PNG, JPEG, BMP, GIF, WEBP or TIFF, any mode",
                    }
                },
            }
        }
    },
}


class DetectedNumber(BaseModel):
    text: str = Field(pattern=r"^[0-9]+$", description="the digits read, left to right")
    confidence: float = Field(
        ge=0,
        le=1,
        description="probability that the whole string is right (the best CTC path's probability through the "
        "reader's string calibration, fitted on validation lines)",
    )
    box: list[float] = Field(
        min_length=4,
        max_length=4,
        description="x0, y0, x1, y1 of the number's ink in the uploaded image's pixels, after EXIF orientation",
    )
    digits: list[ReadDigitResult] = Field(description="one per character of text, as /read answers them")


class DetectResponse(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "request_id": "4f1b9c2de0a84d7e9b6c3a5f1e2d3c4b",
                    "numbers": [
                        {
                            "text": "2",
                            "confidence": 0.91,
                            "box": [212.0, 140.5, 248.0, 196.0],
                            "digits": [
                                {
                                    "label": 2,
                                    "confidence": 0.991,
                                    "probabilities": _EXAMPLE_READ_PROBABILITIES,
                                    "box": [212.0, 140.5, 248.0, 196.0],
                                }
                            ],
                        }
                    ],
                    "candidates": 3,
                    "model": {"name": "reader", "version": 2},
                    "frame": 17,
                    "timings_ms": {"read_ms": 0.3, "preprocess_ms": 21.0, "inference_ms": 9.5, "total_ms": 30.8},
                }
            ]
        },
    )

    request_id: str
    numbers: list[DetectedNumber] = Field(
        description="every number found, in reading order (top to bottom, then left to right); empty when none"
    )
    candidates: int = Field(ge=0, description="lines of ink read; those not confident enough are not numbers")
    model: ReaderInfo
    frame: int | None = Field(default=None, description="the frame number sent, echoed")
    timings_ms: Timings
    ink_png_base64: str | None = Field(
        default=None, description="with debug=true: the ink the detector separated from the paper, as a base64 PNG"
    )
