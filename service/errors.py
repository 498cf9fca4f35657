"""The service's error hierarchy and the one handler that turns it into ``{"detail": ...}`` responses.

Each class carries its HTTP status and a fixed, user-facing message that says what to do; raw exception text,
paths and stack traces never reach a client. The imaging package's and the preprocessing pool's own errors are
mapped onto these at the edge (:data:`MAPPED_ERRORS`). Under ``/v2`` (the Open Inference Protocol) the same errors
are written as that protocol's ``{"error": ...}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from imaging import errors as imaging
from service import preprocess_pool as pool

# Paths of the Open Inference Protocol, whose error body is {"error": ...} instead of {"detail": ...}.
OIP_PATH_PREFIX = "/v2"


class ServiceError(Exception):
    """Base class: ``status_code`` and a default ``detail``; a more specific detail may be passed."""

    status_code: ClassVar[int] = 500
    default_detail: ClassVar[str] = "Internal error. Please retry later."
    headers: ClassVar[dict[str, str]] = {}

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.default_detail
        super().__init__(self.detail)


class InvalidImageError(ServiceError):
    status_code = 400
    default_detail = "The file could not be decoded as an image. Upload a valid PNG, JPEG, BMP, GIF, WEBP or TIFF."


class ImageTooLargeError(ServiceError):
    status_code = 413
    default_detail = "The image is too large. Upload a smaller file or a lower-resolution image."


class UnsupportedMediaTypeError(ServiceError):
    status_code = 415
    default_detail = "The file is not a supported image type. Upload a PNG, JPEG, BMP, GIF, WEBP or TIFF."


class NoDigitFoundError(ServiceError):
    status_code = 422
    default_detail = "No digit found in the image. Upload an image with one clearly visible handwritten digit."


class MissingFileError(ServiceError):
    status_code = 422
    default_detail = "No image file in the request. Send the image as the multipart/form-data field 'file'."


class InvalidRequestError(ServiceError):
    status_code = 422
    default_detail = "The request is invalid. See /docs for the parameters of this endpoint."


class UnknownModelError(ServiceError):
    status_code = 422
    default_detail = "Unknown model name. GET /models lists the models that are loaded."


class ModelNotFoundHTTPError(ServiceError):
    status_code = 404
    default_detail = "No such model is loaded. GET /models lists the models that are loaded."


class InvalidTensorError(ServiceError):
    """An inference request of the Open Inference Protocol that does not fit the model's inputs."""

    status_code = 400
    default_detail = "The inference request is invalid. GET /v2/models/{name} describes the inputs a model takes."


class OipModelNotFoundError(ServiceError):
    status_code = 404
    default_detail = "No such model or version is loaded. GET /v2/models/{name} lists a model's loaded versions."


class AdminDisabledError(ServiceError):
    status_code = 404
    default_detail = "Admin endpoints are disabled on this server. Set DIGITS_ADMIN_TOKEN to enable them."


class AdminTokenMissingError(ServiceError):
    status_code = 401
    default_detail = "This admin endpoint needs the header 'Authorization: Bearer <token>' with DIGITS_ADMIN_TOKEN."
    headers = {"WWW-Authenticate": "Bearer"}


class AdminTokenInvalidError(ServiceError):
    status_code = 403
    default_detail = "The bearer token is not this server's admin token. Send the value of DIGITS_ADMIN_TOKEN."


class StaleFrameError(ServiceError):
    """A camera frame that a newer frame of the same stream has overtaken: answered without reading it."""

    status_code = 409
    default_detail = (
        "A newer frame of this stream has already arrived, so this one was skipped. Send one frame at a time, "
        "numbered upwards."
    )


class ClientClosedRequestError(ServiceError):
    """The client went away mid-upload; nobody reads the answer, its status is for the log and metrics."""

    status_code = 499
    default_detail = "The client closed the connection before the upload was complete."


class ServiceUnavailableError(ServiceError):
    """Transient: the client should retry after ``Retry-After`` seconds. ``reason`` labels the refusal metric."""

    status_code = 503
    default_detail = "The service is not ready. Retry in a moment."
    headers = {"Retry-After": "1"}
    reason: ClassVar[str] = "not_ready"


class QueueFullError(ServiceUnavailableError):
    default_detail = "The service is overloaded. Retry after the number of seconds in the Retry-After header."
    reason = "inference_queue_full"


class DecodeBacklogFullError(QueueFullError):
    reason = "decode_backlog_full"


class MemoryBudgetError(QueueFullError):
    """Uploads in flight already hold ``max_inflight_bytes``: refused before the body is read."""

    reason = "memory_budget"


class InferenceFailedError(ServiceUnavailableError):
    default_detail = "Inference failed for this batch. Retry the request."
    reason = "inference_failed"


class InferenceProcessDownError(ServiceUnavailableError):
    """The inference process stopped with this request in it, or is being restarted."""

    default_detail = "The inference process is restarting. Retry in a moment."
    reason = "inference_process_down"


class PreprocessingFailedError(ServiceUnavailableError):
    default_detail = (
        "The worker preparing this image stopped unexpectedly. Retry the request; if this image fails again, "
        "re-save it as PNG or JPEG and send that."
    )
    reason = "worker_died"


class PreprocessTimeoutError(PreprocessingFailedError):
    default_detail = (
        "Preparing this image took longer than the service allows. Retry the request; if this image fails again, "
        "re-save it as a smaller PNG or JPEG and send that."
    )
    reason = "preprocess_timeout"


# Every way a route that takes one uploaded image can fail, for its OpenAPI responses.
UPLOAD_ERRORS: tuple[type[ServiceError], ...] = (
    InvalidImageError,
    ImageTooLargeError,
    UnsupportedMediaTypeError,
    MissingFileError,
    NoDigitFoundError,
    InvalidRequestError,
    QueueFullError,
    InferenceFailedError,
    InferenceProcessDownError,
    PreprocessingFailedError,
    PreprocessTimeoutError,
    MemoryBudgetError,
    ServiceUnavailableError,
)

RefusalCounter = Callable[[str], None]


# What each failure of the imaging package and of the preprocessing pool means to a client of this service.
MAPPED_ERRORS: dict[type[Exception], type[ServiceError]] = {
    imaging.UnsupportedImageTypeError: UnsupportedMediaTypeError,
    imaging.ImageTooLargeError: ImageTooLargeError,
    imaging.InvalidImageError: InvalidImageError,
    imaging.NoDigitFoundError: NoDigitFoundError,
    pool.PoolFullError: DecodeBacklogFullError,
    pool.PoolClosedError: ServiceUnavailableError,
    pool.WorkerDiedError: PreprocessingFailedError,
    pool.JobTimeoutError: PreprocessTimeoutError,
}


def as_service_error(exc: Exception) -> ServiceError:
    """The service error for ``exc``: itself, its imaging mapping, or the generic 500 (whose text is fixed)."""
    if isinstance(exc, ServiceError):
        return exc
    for mapped, service_error in MAPPED_ERRORS.items():
        if isinstance(exc, mapped):
            return service_error()
    return ServiceError()


def _error_response(request: Request, detail: str, status_code: int, headers: Mapping[str, str] | None) -> JSONResponse:
    key = "error" if request.url.path.startswith(OIP_PATH_PREFIX) else "detail"
    return JSONResponse({key: detail}, status_code=status_code, headers=headers or None)


async def _handle_service_error(request: Request, exc: Exception) -> JSONResponse:
    error = as_service_error(exc)
    return _error_response(request, error.detail, error.status_code, error.headers)


async def _handle_http_exception(request: Request, exc: Exception) -> JSONResponse:
    # Starlette's own 404 and 405 (no such route, wrong method), in the body shape of the path's protocol.
    if not isinstance(exc, HTTPException):
        return await _handle_service_error(request, exc)
    return _error_response(request, str(exc.detail), exc.status_code, exc.headers)


async def _handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    # Name the offending parameter (from the endpoint's own declaration, never the client's input).
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    location: tuple[object, ...] = tuple(errors[0].get("loc", ())) if errors else ()
    if len(location) >= 2:
        detail = f"Invalid {location[0]} parameter '{location[-1]}'. {InvalidRequestError.default_detail}"
        return await _handle_service_error(request, InvalidRequestError(detail))
    return await _handle_service_error(request, InvalidRequestError())


def install_error_handler(app: FastAPI, count_refusal: RefusalCounter) -> None:
    """Map every error to ``{"detail": ...}`` (``{"error": ...}`` under ``/v2``); ``count_refusal(reason)`` is
    called for each 503."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        error = as_service_error(exc)
        if isinstance(error, ServiceUnavailableError):
            count_refusal(error.reason)
        return await _handle_service_error(request, error)

    app.add_exception_handler(ServiceError, handle)
    app.add_exception_handler(HTTPException, _handle_http_exception)
    for mapped in MAPPED_ERRORS:
        app.add_exception_handler(mapped, handle)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    # Last line of defence: any other exception becomes the generic 500 above, without its text; the server logs it.
    app.add_exception_handler(Exception, _handle_service_error)
