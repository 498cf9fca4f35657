"""Pydantic types of the Open Inference Protocol (KServe v2 REST): requests, responses, metadata and errors.

They follow the protocol's own OpenAPI description (as implemented by Triton and MLServer); tensor contents stay
untyped here (``data``) and are checked by :mod:`service.tensor_codec`, which knows the datatypes.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Dim = Annotated[int, Field(ge=0)]
Parameters = dict[str, Any]


class RequestInput(BaseModel):
    """One input tensor: ``data`` in JSON, or ``parameters.binary_data_size`` bytes after the JSON header."""

    name: str
    shape: list[Dim]
    datatype: str
    parameters: Parameters | None = None
    data: Any = None


class RequestOutput(BaseModel):
    """An output the client asks for; ``parameters.binary_data`` chooses the binary encoding for it."""

    name: str
    parameters: Parameters | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "42",
                    "inputs": [{"name": "input__0", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}],
                    "outputs": [{"name": "output__0"}, {"name": "probabilities"}],
                }
            ]
        }
    )

    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[Dim]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] | None = Field(default=None, description="row-major; absent when sent as binary data")


class InferenceResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for a dimension of any size (the batch)")


class ModelMetadataResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "cnn",
                    "versions": ["1"],
                    "platform": "pytorch_libtorch",
                    "inputs": [
                        {"name": "input__0", "datatype": "FP32", "shape": [-1, 1, 28, 28]},
                        {"name": "image", "datatype": "BYTES", "shape": [-1, 1]},
                    ],
                    "outputs": [
                        {"name": "output__0", "datatype": "FP32", "shape": [-1, 10]},
                        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
                    ],
                }
            ]
        }
    )

    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class ServerMetadataResponse(BaseModel):
    name: str
    version: str
    extensions: list[str]


class OipErrorResponse(BaseModel):
    """Every error under /v2: one short, fixed sentence that says what to do."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"error": "No such model or version is loaded."}]})

    error: str
