"""Tensor encoding of the Open Inference Protocol, checked against the reference client's own encoder and parser
(``tritonclient.http``): JSON data, the binary tensor data extension, BYTES, and every malformed request."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton

from service.errors import InvalidTensorError
from service.oip_schemas import InferenceRequest
from service.tensor_codec import OutputTensor, decode_request, encode_response, wants_binary

PIXELS = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)


def client_body(
    inputs: list[triton.InferInput], outputs: list[triton.InferRequestedOutput] | None = None
) -> tuple[bytes, int | None]:
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, outputs)
    return (body.encode() if isinstance(body, str) else body), json_size


def pixel_input(binary: bool, data: np.ndarray = PIXELS) -> triton.InferInput:
    tensor = triton.InferInput("input__0", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data, binary_data=binary)
    return tensor


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_client_fp32_tensor_decodes_to_the_same_array(binary: bool) -> None:
    body, header_length = client_body([pixel_input(binary)])

    decoded = decode_request(body, header_length)

    assert (header_length is not None) == binary
    assert decoded.tensors["input__0"].dtype == np.float32
    np.testing.assert_array_equal(decoded.tensors["input__0"], PIXELS)
    assert decoded.tensors["input__0"].flags.writeable


def test_client_bytes_tensor_decodes_to_the_same_bytes() -> None:
    files = np.array([[b"\x89PNG\x00\xff"], [b""], [b"GIF89a"]], dtype=object)
    tensor = triton.InferInput("image", [3, 1], "BYTES")
    tensor.set_data_from_numpy(files, binary_data=True)
    body, header_length = client_body([tensor])

    decoded = decode_request(body, header_length)

    assert decoded.tensors["image"].shape == (3, 1)
    assert decoded.tensors["image"].ravel().tolist() == [b"\x89PNG\x00\xff", b"", b"GIF89a"]


def test_json_data_may_be_nested_and_bytes_are_base64() -> None:
    request = {
        "inputs": [
            {"name": "a", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]},
            {"name": "b", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(b"\x00\x01").decode()]},
        ]
    }

    decoded = decode_request(json.dumps(request).encode(), None)

    np.testing.assert_array_equal(decoded.tensors["a"], np.array([[1, 2], [3, 4]], dtype=np.int32))
    assert decoded.tensors["b"].tolist() == [b"\x00\x01"]


def _json(*inputs: dict[str, Any]) -> bytes:
    return json.dumps({"inputs": list(inputs)}).encode()


FP32_1x2 = {"name": "x", "shape": [1, 2], "datatype": "FP32"}
MALFORMED = {
    "not json": (b"{", None, "not valid JSON of the protocol"),
    "no inputs": (b'{"inputs": []}', None, "not valid JSON of the protocol (inputs"),
    "negative dimension": (_json({**FP32_1x2, "shape": [-1, 2], "data": [1, 2]}), None, "inputs.0.shape.0"),
    "too few elements": (_json({**FP32_1x2, "data": [1.0]}), None, "needs 2 elements, data has 1"),
    "ragged": (_json({**FP32_1x2, "data": [[1.0], [1.0, 2.0]]}), None, "flat or nested list of numbers"),
    "strings for FP32": (_json({**FP32_1x2, "data": ["1", "2"]}), None, "must hold FP32 values"),
    "floats for INT32": (_json({**FP32_1x2, "datatype": "INT32", "data": [1.5, 2]}), None, "must hold INT32"),
    "unknown datatype": (_json({**FP32_1x2, "datatype": "FP8", "data": [1, 2]}), None, "unknown datatype"),
    "no data": (_json(FP32_1x2), None, "no data"),
    "sent twice": (_json({**FP32_1x2, "data": [1, 2]}, {**FP32_1x2, "data": [1, 2]}), None, "sent twice"),
    "bytes not base64": (_json({"name": "b", "shape": [1], "datatype": "BYTES", "data": ["%%"]}), None, "base64"),
    "bytes not strings": (_json({"name": "b", "shape": [1], "datatype": "BYTES", "data": [1]}), None, "base64"),
    "header length beyond body": (b"{}", 3, "between 1 and the body's length (2)"),
    "binary without header split": (
        _json({**FP32_1x2, "parameters": {"binary_data_size": 8}}),
        None,
        "runs past the end of the body",
    ),
    "binary size mismatch": (
        _json({**FP32_1x2, "parameters": {"binary_data_size": 4}}) + b"\x00" * 4,
        len(_json({**FP32_1x2, "parameters": {"binary_data_size": 4}})),
        "needs 8 bytes, got 4",
    ),
    "bad binary size": (_json({**FP32_1x2, "parameters": {"binary_data_size": "8"}}), None, "non-negative integer"),
    "trailing bytes": (
        _json({**FP32_1x2, "data": [1, 2]}) + b"xx",
        len(_json({**FP32_1x2, "data": [1, 2]})),
        "2 bytes",
    ),
    "bytes shape beyond the data": (
        _json({"name": "b", "shape": [10**12], "datatype": "BYTES", "parameters": {"binary_data_size": 4}})
        + b"\x00" * 4,
        len(_json({"name": "b", "shape": [10**12], "datatype": "BYTES", "parameters": {"binary_data_size": 4}})),
        "fewer than the 1000000000000 BYTES elements",
    ),
    "bytes element too long": (
        _json({"name": "b", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 5}})
        + b"\x09\x00\x00\x00x",
        len(_json({"name": "b", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 5}})),
        "longer than the binary data left",
    ),
}


@pytest.mark.parametrize(("body", "header_length", "message"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_request_raises_invalid_tensor_naming_the_problem(
    body: bytes, header_length: int | None, message: str
) -> None:
    with pytest.raises(InvalidTensorError) as raised:
        decode_request(body, header_length)

    assert raised.value.status_code == 400
    assert message in raised.value.detail


def test_output_binary_flag_overrides_the_request_default() -> None:
    request = InferenceRequest.model_validate(
        {
            "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [0]}],
            "parameters": {"binary_data_output": True},
            "outputs": [{"name": "a", "parameters": {"binary_data": False}}, {"name": "b"}],
        }
    )
    plain = request.model_copy(update={"parameters": None})

    assert [wants_binary(request, name) for name in ("a", "b", "c")] == [False, True, True]
    assert [wants_binary(plain, name) for name in ("a", "b", "c")] == [False, False, False]


@pytest.mark.parametrize("binary", [(False, False), (True, False), (True, True)], ids=["json", "mixed", "binary"])
def test_response_parses_with_the_client_to_the_same_arrays(binary: tuple[bool, bool]) -> None:
    logits = np.arange(20, dtype=np.float32).reshape(2, 10) / 7
    probabilities = np.full((2, 10), 0.1, dtype=np.float32)
    outputs = [OutputTensor("output__0", logits, binary[0]), OutputTensor("probabilities", probabilities, binary[1])]

    body, header_length = encode_response("cnn", "1", "42", outputs)
    result = triton.InferenceServerClient.parse_response_body(body, header_length=header_length)

    assert (header_length is not None) == any(binary)
    assert result.get_response()["model_name"] == "cnn"
    assert result.get_response()["model_version"] == "1"
    assert result.get_response()["id"] == "42"
    np.testing.assert_array_equal(result.as_numpy("output__0"), logits)
    np.testing.assert_array_equal(result.as_numpy("probabilities"), probabilities)
