"""Tensors of the Open Inference Protocol to NumPy and back: JSON ``data`` and the binary tensor data extension.

With the extension, a body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the raw bytes
of every tensor whose ``parameters`` carry ``binary_data_size``, in the order the header lists them: little-endian
values in row-major order, and for BYTES each element as a 4-byte little-endian length and its bytes. Without
the header the body is JSON alone. JSON cannot carry arbitrary bytes, so a BYTES element in JSON ``data`` is a
base64 string (the protocol leaves their encoding to the server). Every malformed request raises
:class:`InvalidTensorError` (400) with a sentence naming the tensor.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from service.errors import InvalidTensorError
from service.oip_schemas import InferenceRequest, InferenceResponse, RequestInput, ResponseOutput

HEADER_LENGTH_HEADER = "Inference-Header-Content-Length"
BYTES = "BYTES"
# Little-endian, as the extension specifies.
NUMERIC_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
# Which JSON number kinds (NumPy's dtype.kind of the parsed data) each family of datatypes accepts.
_ACCEPTED_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}
_LENGTH_PREFIX = struct.Struct("<I")

Tensor = npt.NDArray[Any]


@dataclass(frozen=True)
class DecodedRequest:
    """The request's JSON header and its input tensors by name (BYTES as object arrays of ``bytes``)."""

    request: InferenceRequest
    tensors: dict[str, Tensor]


@dataclass(frozen=True)
class OutputTensor:
    name: str
    array: Tensor
    binary: bool


def _invalid(tensor: str, problem: str) -> InvalidTensorError:
    return InvalidTensorError(f"Input '{tensor}': {problem}")


def _binary_size(tensor: RequestInput) -> int | None:
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise _invalid(tensor.name, "parameters.binary_data_size must be a non-negative integer.")
    return size


def _parse_header(header: bytes) -> InferenceRequest:
    try:
        return InferenceRequest.model_validate_json(header)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidTensorError(
            f"The inference request is not valid JSON of the protocol ({where}: {first['msg']}). "
            "See /docs for the request format."
        ) from None


def _flatten(data: Any) -> Iterator[Any]:
    if isinstance(data, list):
        for item in data:
            yield from _flatten(item)
    else:
        yield data


def _bytes_from_json(tensor: RequestInput, count: int) -> Tensor:
    elements = list(_flatten(tensor.data))
    if len(elements) != count:
        raise _invalid(tensor.name, f"shape {tensor.shape} needs {count} elements, data has {len(elements)}.")
    array = np.empty(count, dtype=object)
    for index, element in enumerate(elements):
        if not isinstance(element, str):
            raise _invalid(tensor.name, "BYTES elements in JSON must be base64 strings.")
        try:
            array[index] = base64.b64decode(element, validate=True)
        except binascii.Error:
            raise _invalid(tensor.name, "BYTES elements in JSON must be base64 strings.") from None
    return array.reshape(tensor.shape)


def _numbers_from_json(tensor: RequestInput, dtype: np.dtype[Any], count: int) -> Tensor:
    try:
        values = np.asarray(tensor.data)
    except ValueError:
        raise _invalid(tensor.name, "data must be a flat or nested list of numbers with the declared shape.") from None
    if values.size != count:
        raise _invalid(tensor.name, f"shape {tensor.shape} needs {count} elements, data has {values.size}.")
    if count and values.dtype.kind not in _ACCEPTED_KINDS[dtype.kind]:
        raise _invalid(tensor.name, f"data must hold {tensor.datatype} values.")
    return values.astype(dtype).reshape(tensor.shape)


def _bytes_from_binary(tensor: RequestInput, chunk: bytes, count: int) -> Tensor:
    # Checked before allocating: the shape is the client's claim, the chunk's length is what it sent.
    if count * _LENGTH_PREFIX.size > len(chunk):
        raise _invalid(tensor.name, f"binary data holds fewer than the {count} BYTES elements of its shape.")
    array = np.empty(count, dtype=object)
    offset = 0
    for index in range(count):
        if offset + _LENGTH_PREFIX.size > len(chunk):
            raise _invalid(tensor.name, f"binary data holds fewer than the {count} BYTES elements of its shape.")
        (length,) = _LENGTH_PREFIX.unpack_from(chunk, offset)
        offset += _LENGTH_PREFIX.size
        if offset + length > len(chunk):
            raise _invalid(tensor.name, "a BYTES element is longer than the binary data left.")
        array[index] = chunk[offset : offset + length]
        offset += length
    if offset != len(chunk):
        raise _invalid(tensor.name, f"binary data holds more than the {count} BYTES elements of its shape.")
    return array.reshape(tensor.shape)


def _numbers_from_binary(tensor: RequestInput, dtype: np.dtype[Any], chunk: bytes, count: int) -> Tensor:
    if len(chunk) != count * dtype.itemsize:
        raise _invalid(
            tensor.name,
            f"shape {tensor.shape} of {tensor.datatype} needs {count * dtype.itemsize} bytes, got {len(chunk)}.",
        )
    # A copy: the body's bytes are read-only, and models receive writable tensors.
    return np.frombuffer(chunk, dtype=dtype).reshape(tensor.shape).copy()


def _decode_tensor(tensor: RequestInput, chunk: bytes | None) -> Tensor:
    count = math.prod(tensor.shape)
    if tensor.datatype == BYTES:
        return _bytes_from_json(tensor, count) if chunk is None else _bytes_from_binary(tensor, chunk, count)
    dtype = NUMERIC_DTYPES.get(tensor.datatype)
    if dtype is None:
        raise _invalid(tensor.name, f"unknown datatype; use one of {', '.join([*NUMERIC_DTYPES, BYTES])}.")
    return (
        _numbers_from_json(tensor, dtype, count) if chunk is None else _numbers_from_binary(tensor, dtype, chunk, count)
    )


def decode_request(body: bytes, header_length: int | None) -> DecodedRequest:
    """Split ``body`` into its JSON header and binary section (``header_length`` from the HTTP header, if sent)."""
    if header_length is not None and not 0 < header_length <= len(body):
        raise InvalidTensorError(f"{HEADER_LENGTH_HEADER} must be between 1 and the body's length ({len(body)}).")
    split = len(body) if header_length is None else header_length
    request = _parse_header(body[:split])
    binary = memoryview(body)[split:]
    offset = 0
    tensors: dict[str, Tensor] = {}
    for tensor in request.inputs:
        if tensor.name in tensors:
            raise _invalid(tensor.name, "sent twice; send each input once.")
        size = _binary_size(tensor)
        chunk = None
        if size is not None:
            if offset + size > len(binary):
                raise _invalid(tensor.name, "binary_data_size runs past the end of the body.")
            chunk = bytes(binary[offset : offset + size])
            offset += size
        elif tensor.data is None:
            raise _invalid(tensor.name, "no data: send 'data' in JSON or binary data with binary_data_size.")
        tensors[tensor.name] = _decode_tensor(tensor, chunk)
    if offset != len(binary):
        raise InvalidTensorError(
            f"The body has {len(binary) - offset} bytes after the inputs' binary data; "
            f"check {HEADER_LENGTH_HEADER} and each binary_data_size."
        )
    return DecodedRequest(request=request, tensors=tensors)


def wants_binary(request: InferenceRequest, output: str) -> bool:
    """The output's ``binary_data`` parameter, else the request's ``binary_data_output`` (default: JSON)."""
    for requested in request.outputs or []:
        if requested.name == output and "binary_data" in (requested.parameters or {}):
            return bool((requested.parameters or {})["binary_data"])
    return bool((request.parameters or {}).get("binary_data_output", False))


def encode_response(
    model_name: str, model_version: str, request_id: str | None, outputs: Sequence[OutputTensor]
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the length of its JSON header."""
    described: list[ResponseOutput] = []
    blobs: list[bytes] = []
    for output in outputs:
        datatype = next(name for name, dtype in NUMERIC_DTYPES.items() if dtype == output.array.dtype)
        shape = list(output.array.shape)
        if output.binary:
            blob = np.ascontiguousarray(output.array).tobytes()
            blobs.append(blob)
            described.append(
                ResponseOutput(
                    name=output.name, shape=shape, datatype=datatype, parameters={"binary_data_size": len(blob)}
                )
            )
        else:
            described.append(
                ResponseOutput(name=output.name, shape=shape, datatype=datatype, data=output.array.ravel().tolist())
            )
    response = InferenceResponse(model_name=model_name, model_version=model_version, id=request_id, outputs=described)
    header = json.dumps(response.model_dump(exclude_none=True), separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
