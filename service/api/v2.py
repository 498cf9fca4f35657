"""``/v2``: the Open Inference Protocol (KServe v2 REST) beside the service's own API, on the same models and batcher.

Health answers follow the protocol: 200 for true, 400 for false, no body. Errors are ``{"error": ...}`` (see
``service.errors``); a full queue is 503 with ``Retry-After`` as everywhere else.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from service import errors, oip
from service.deps import StateDep
from service.oip_schemas import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadataResponse,
    OipErrorResponse,
    ServerMetadataResponse,
)
from service.schemas import error_responses
from service.tensor_codec import HEADER_LENGTH_HEADER, decode_request, encode_response
from service.uploads import read_body

router = APIRouter(prefix="/v2", tags=["open inference protocol"])

SERVER_NAME = "digits"
MODEL_PATH = "/models/{model_name}"
VERSION_PATH = "/models/{model_name}/versions/{model_version}"
EXTENSIONS = ["binary_tensor_data"]
_NO_BODY: dict[int | str, dict[str, Any]] = {
    200: {"description": "true", "content": None},
    400: {"description": "false", "content": None},
}
_BINARY_MEDIA_TYPE = "application/octet-stream"


def _inlined(schema: Any, definitions: dict[str, Any]) -> Any:
    """``schema`` with its local ``$defs`` references replaced by their definitions (valid anywhere in OpenAPI)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inlined(definitions[schema["$ref"].rsplit("/", 1)[-1]], definitions)
        return {key: _inlined(value, definitions) for key, value in schema.items() if key != "$defs"}
    if isinstance(schema, list):
        return [_inlined(item, definitions) for item in schema]
    return schema


def _errors(*error_classes: type[errors.ServiceError]) -> dict[int | str, dict[str, Any]]:
    return error_responses(*error_classes, model=OipErrorResponse, key="error")


# 422 too: FastAPI would otherwise document its own list-shaped validation error for the path parameters.
_MODEL_ERRORS = _errors(errors.OipModelNotFoundError, errors.InvalidRequestError, errors.ServiceUnavailableError)
_INFER_ERRORS = _errors(
    errors.InvalidTensorError,
    errors.InvalidImageError,
    errors.OipModelNotFoundError,
    errors.ImageTooLargeError,
    errors.UnsupportedMediaTypeError,
    errors.NoDigitFoundError,
    errors.QueueFullError,
    errors.InferenceFailedError,
    errors.PreprocessingFailedError,
)
_REQUEST_SCHEMA = InferenceRequest.model_json_schema()
_INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inlined(_REQUEST_SCHEMA, _REQUEST_SCHEMA.get("$defs", {}))},
            _BINARY_MEDIA_TYPE: {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": f"JSON header of {HEADER_LENGTH_HEADER} bytes, then the binary tensor data",
                }
            },
        },
    }
}
_INFER_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "model": InferenceResponse,
        "content": {_BINARY_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        "description": f"JSON, or with binary outputs a JSON header of {HEADER_LENGTH_HEADER} bytes and their data",
    }
}


def _health(true: bool) -> Response:
    return Response(status_code=200 if true else 400)


@router.get("", response_model=ServerMetadataResponse)
async def server_metadata(request: Request) -> ServerMetadataResponse:
    """Server name, version and the protocol extensions it supports."""
    return ServerMetadataResponse(name=SERVER_NAME, version=request.app.version, extensions=EXTENSIONS)


@router.get("/health/live", response_class=Response, responses=_NO_BODY)
async def server_live() -> Response:
    """200: the process is up and its event loop answers."""
    return _health(True)


@router.get("/health/ready", response_class=Response, responses={**_NO_BODY, **_errors(errors.ServiceUnavailableError)})
async def server_ready(state: StateDep) -> Response:
    """200 once models are loaded, verified and warmed up; 400 while not (starting, draining, nothing servable)."""
    return _health(state.ready)


@router.get(MODEL_PATH, response_model=ModelMetadataResponse, responses=_MODEL_ERRORS)
async def model_metadata(state: StateDep, model_name: str) -> ModelMetadataResponse:
    """A model's loaded versions, platform, inputs and outputs."""
    return oip.model_metadata(oip.find_model(state.registry.models, model_name))


@router.get(VERSION_PATH, response_model=ModelMetadataResponse, responses=_MODEL_ERRORS)
async def model_version_metadata(state: StateDep, model_name: str, model_version: str) -> ModelMetadataResponse:
    """One loaded version's metadata."""
    return oip.model_metadata(oip.find_model(state.registry.models, model_name, model_version))


@router.get(f"{MODEL_PATH}/ready", response_class=Response, responses={**_NO_BODY, **_MODEL_ERRORS})
async def model_ready(state: StateDep, model_name: str) -> Response:
    """200 when the model is loaded and the service ready; 404 for a model that is not loaded."""
    oip.find_model(state.registry.models, model_name)
    return _health(state.ready)


@router.get(f"{VERSION_PATH}/ready", response_class=Response, responses={**_NO_BODY, **_MODEL_ERRORS})
async def model_version_ready(state: StateDep, model_name: str, model_version: str) -> Response:
    """200 when that version is loaded and the service ready; 404 for a version that is not loaded."""
    oip.find_model(state.registry.models, model_name, model_version)
    return _health(state.ready)


async def _infer(request: Request, state: StateDep, model_name: str, model_version: str | None) -> Response:
    # The model is resolved once, from one snapshot, before the body is read: a reload meanwhile changes nothing.
    state.batcher.check_intake()
    model = oip.find_model(state.registry.models, model_name, model_version)
    encoding = request.headers.get("content-encoding", "identity")
    if encoding != "identity":
        raise errors.InvalidTensorError("Compressed request bodies are not supported; send the body uncompressed.")
    declared = request.headers.get(HEADER_LENGTH_HEADER)
    if declared is not None and not declared.isdigit():
        raise errors.InvalidTensorError(f"{HEADER_LENGTH_HEADER} must be the JSON header's length in bytes.")
    with state.upstream.track(), state.byte_budget.reserve() as reservation:
        body = await read_body(request, state.settings.max_upload_bytes, reservation)
        # A batch in JSON is a megabyte of numbers to parse: not on the event loop.
        decoded = await run_in_threadpool(decode_request, body, int(declared) if declared is not None else None)
        prepared = await oip.prepare(state, model, decoded)
    outputs = await oip.infer(state, prepared)
    content, header_length = encode_response(model.name, str(model.version), decoded.request.id, outputs)
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type=_BINARY_MEDIA_TYPE, headers={HEADER_LENGTH_HEADER: str(header_length)})


@router.post(
    f"{MODEL_PATH}/infer",
    response_class=Response,
    responses={**_INFER_ANSWER, **_INFER_ERRORS},
    openapi_extra=_INFER_BODY,
)
async def model_infer(request: Request, state: StateDep, model_name: str) -> Response:
    """Run the model on a batch of tensors (JSON or binary tensor data)."""
    return await _infer(request, state, model_name, None)


@router.post(
    f"{VERSION_PATH}/infer",
    response_class=Response,
    responses={**_INFER_ANSWER, **_INFER_ERRORS},
    openapi_extra=_INFER_BODY,
)
async def model_version_infer(request: Request, state: StateDep, model_name: str, model_version: str) -> Response:
    """Run one loaded version of the model on a batch of tensors."""
    return await _infer(request, state, model_name, model_version)
