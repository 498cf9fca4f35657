"""The served models as the Open Inference Protocol sees them: names, versions, metadata and inference.

Each store model takes ``input__0`` (FP32 ``[N, 1, 28, 28]`` in [0, 1]) and returns ``output__0`` (FP32 ``[N, 10]``
logits, what Triton returns when it serves the same store) and, on request, ``probabilities`` (calibrated). The
``ensemble`` model takes the same inputs and returns the service's weighted ensemble of every served model as
``probabilities``. Instead of ``input__0``, any model takes ``image``: BYTES ``[N]`` or ``[N, 1]``, one image file per
element, which goes through the service's preprocessing as an upload to ``/predict`` does. Every row is one item
of the service's micro-batcher, so requests of both APIs share its batches and its queue limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from contract.store import INPUT_SPEC, OUTPUT_SPEC
from imaging.decoding import DecodeLimits
from imaging.digit import prepare_digit
from service.errors import InvalidTensorError, OipModelNotFoundError
from service.inference import DigitPrediction, DigitRequest
from service.oip_schemas import InferenceRequest, MetadataTensor, ModelMetadataResponse
from service.registry import ModelSet
from service.state import AppState
from service.tensor_codec import BYTES, DecodedRequest, OutputTensor, Tensor, wants_binary

ENSEMBLE_NAME = "ensemble"
# The ensemble is a rule over whatever models are served, not a stored artifact: it has one version.
ENSEMBLE_VERSION = 1
LOGITS_OUTPUT = OUTPUT_SPEC.name
PROBABILITIES_OUTPUT = "probabilities"
PIXELS_INPUT = INPUT_SPEC.name
IMAGE_INPUT = "image"
FP32 = "FP32"
# Triton's names for the two kinds of model.
MODEL_PLATFORM = "pytorch_libtorch"
ENSEMBLE_PLATFORM = "ensemble"

_BATCH = -1
_PIXELS_SHAPE = [*INPUT_SPEC.dims]
_CLASSES_SHAPE = [*OUTPUT_SPEC.dims]


@dataclass(frozen=True)
class OipModel:
    """A model a request addressed: one served store model, or the ensemble of all of them, in one snapshot."""

    name: str
    version: int
    members: tuple[str, ...]
    snapshot: ModelSet

    @property
    def is_ensemble(self) -> bool:
        return self.name == ENSEMBLE_NAME

    @property
    def outputs(self) -> tuple[str, ...]:
        return (PROBABILITIES_OUTPUT,) if self.is_ensemble else (LOGITS_OUTPUT, PROBABILITIES_OUTPUT)

    @property
    def default_outputs(self) -> tuple[str, ...]:
        """What a request that names no output gets: what Triton would return for the same model."""
        return (PROBABILITIES_OUTPUT,) if self.is_ensemble else (LOGITS_OUTPUT,)


def _version_matches(requested: str | None, version: int) -> bool:
    return requested is None or (requested.isdigit() and int(requested) == version)


def find_model(snapshot: ModelSet, name: str, version: str | None = None) -> OipModel:
    """The served digit classifier ``name`` (``version``: any loaded one, default the served one), else 404.

    Line readers take another tensor (see ``/read``) and are not offered here."""
    classifiers = snapshot.classifiers()
    if name == ENSEMBLE_NAME and classifiers and _version_matches(version, ENSEMBLE_VERSION):
        return OipModel(ENSEMBLE_NAME, ENSEMBLE_VERSION, tuple(classifiers), snapshot)
    if name in classifiers and _version_matches(version, snapshot[name].version):
        return OipModel(name, snapshot[name].version, (name,), snapshot)
    loaded = ", ".join([*classifiers, ENSEMBLE_NAME] if classifiers else [])
    raise OipModelNotFoundError(
        f"No such model or version is loaded (loaded models: {loaded or 'none'}). "
        "GET /v2/models/{name} lists a model's loaded versions."
    )


def model_metadata(model: OipModel) -> ModelMetadataResponse:
    return ModelMetadataResponse(
        name=model.name,
        versions=[str(model.version)],
        platform=ENSEMBLE_PLATFORM if model.is_ensemble else MODEL_PLATFORM,
        inputs=[
            MetadataTensor(name=PIXELS_INPUT, datatype=FP32, shape=[_BATCH, *_PIXELS_SHAPE]),
            MetadataTensor(name=IMAGE_INPUT, datatype=BYTES, shape=[_BATCH, 1]),
        ],
        outputs=[MetadataTensor(name=name, datatype=FP32, shape=[_BATCH, *_CLASSES_SHAPE]) for name in model.outputs],
    )


def _check_rows(shape: Sequence[int], max_rows: int) -> None:
    # Each row takes a place in the batcher's queue: more than it holds could never be accepted.
    if not 1 <= shape[0] <= max_rows:
        raise InvalidTensorError(f"Send between 1 and {max_rows} rows per request; split larger batches.")


def _pixel_rows(tensor: Tensor, datatype: str, max_rows: int) -> list[torch.Tensor]:
    if datatype != FP32 or list(tensor.shape[1:]) != _PIXELS_SHAPE or tensor.ndim != len(_PIXELS_SHAPE) + 1:
        raise InvalidTensorError(
            f"Input '{PIXELS_INPUT}' must be {FP32} of shape [N, {', '.join(map(str, _PIXELS_SHAPE))}], "
            f"got {datatype} {list(tensor.shape)}."
        )
    _check_rows(tensor.shape, max_rows)
    if not (np.isfinite(tensor).all() and tensor.min() >= 0.0 and tensor.max() <= 1.0):
        raise InvalidTensorError(
            f"Input '{PIXELS_INPUT}' must hold values in [0, 1] (white digit on black); scale pixels by 1/255."
        )
    return list(torch.from_numpy(tensor))


async def _image_rows(state: AppState, tensor: Tensor, datatype: str) -> list[torch.Tensor]:
    if datatype != BYTES or tensor.ndim not in (1, 2) or (tensor.ndim == 2 and tensor.shape[1] != 1):
        raise InvalidTensorError(
            f"Input '{IMAGE_INPUT}' must be {BYTES} of shape [N] or [N, 1], one image file per element."
        )
    _check_rows(tensor.shape, state.batcher.queue_max_size)
    limits = DecodeLimits(max_image_pixels=state.settings.max_image_pixels)
    digits = await asyncio.gather(
        *(state.preprocess_pool.run(prepare_digit, bytes(data), limits) for data in tensor.ravel())
    )
    return [torch.from_numpy(digit.pixels) for digit in digits]


def _requested_outputs(model: OipModel, request: InferenceRequest) -> tuple[str, ...]:
    if not request.outputs:
        return model.default_outputs
    for output in request.outputs:
        if output.name not in model.outputs:
            raise InvalidTensorError(f"Model '{model.name}' has the outputs {', '.join(model.outputs)}.")
        if "classification" in (output.parameters or {}):
            raise InvalidTensorError("The classification extension is not supported; request the tensors instead.")
    return tuple(dict.fromkeys(output.name for output in request.outputs))


@dataclass(frozen=True)
class PreparedInference:
    """A checked request: its model, its rows as ``(1, 28, 28)`` model inputs and the outputs to return."""

    model: OipModel
    request: InferenceRequest
    rows: list[torch.Tensor]
    outputs: tuple[str, ...]


async def prepare(state: AppState, model: OipModel, decoded: DecodedRequest) -> PreparedInference:
    """Check the request against ``model`` and turn its one input, ``input__0`` or ``image``, into rows."""
    outputs = _requested_outputs(model, decoded.request)
    inputs = decoded.request.inputs
    if len(inputs) != 1 or inputs[0].name not in (PIXELS_INPUT, IMAGE_INPUT):
        raise InvalidTensorError(f"Send exactly one input: '{PIXELS_INPUT}' (pixels) or '{IMAGE_INPUT}' (image files).")
    tensor = decoded.tensors[inputs[0].name]
    if inputs[0].name == PIXELS_INPUT:
        rows = _pixel_rows(tensor, inputs[0].datatype, state.batcher.queue_max_size)
    else:
        rows = await _image_rows(state, tensor, inputs[0].datatype)
    return PreparedInference(model, decoded.request, rows, outputs)


def _output_array(model: OipModel, name: str, predictions: Sequence[DigitPrediction]) -> Tensor:
    if model.is_ensemble:
        rows = [prediction.ensemble.probabilities for prediction in predictions]
    elif name == LOGITS_OUTPUT:
        rows = [prediction.outputs[0].logits for prediction in predictions]
    else:
        rows = [prediction.outputs[0].result.probabilities for prediction in predictions]
    return np.asarray(rows, dtype=np.float32)


async def infer(state: AppState, prepared: PreparedInference) -> list[OutputTensor]:
    """Every row through the micro-batcher on the model's snapshot; the requested outputs, ``[N, 10]`` each."""
    model = prepared.model
    predictions = await state.batcher.submit_many(
        [DigitRequest(image=row, models=model.snapshot, selected=model.members) for row in prepared.rows]
    )
    return [
        OutputTensor(name, _output_array(model, name, predictions), wants_binary(prepared.request, name))
        for name in prepared.outputs
    ]
