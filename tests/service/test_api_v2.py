"""``/v2`` (Open Inference Protocol) through the ASGI app on the stand-in store: exact tensors, the same answers as
``/predict``, and every error status with its ``{"error": ...}`` body."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient

from service import errors
from service.config import Settings
from service.deps import STATE_KEY
from service.main import create_app
from tests.support.stand_ins import FIXED_LOGITS
from tests.support.uploads import draw_seven, png_bytes, upload

PIXELS = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
OVERLOADED = "The service is overloaded. Retry after the number of seconds in the Retry-After header."


def pixels_request(data: np.ndarray = PIXELS, **fields: Any) -> dict[str, Any]:
    tensor = {"name": "input__0", "shape": list(data.shape), "datatype": "FP32", "data": data.ravel().tolist()}
    return {"inputs": [tensor], **fields}


def image_request(*files: bytes, **fields: Any) -> dict[str, Any]:
    data = [base64.b64encode(file).decode() for file in files]
    return {"inputs": [{"name": "image", "shape": [len(files), 1], "datatype": "BYTES", "data": data}], **fields}


def outputs(*names: str) -> list[dict[str, str]]:
    return [{"name": name} for name in names]


def tensor(response_json: dict[str, Any], name: str) -> np.ndarray:
    output = next(output for output in response_json["outputs"] if output["name"] == name)
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def test_server_metadata_names_the_binary_extension(client: TestClient) -> None:
    response = client.get("/v2")

    assert response.status_code == 200
    assert response.json() == {"name": "digits", "version": client.app.version, "extensions": ["binary_tensor_data"]}


@pytest.mark.parametrize(
    "path", ["/v2/health/live", "/v2/health/ready", "/v2/models/cnn/ready", "/v2/models/ensemble/versions/1/ready"]
)
def test_health_is_200_with_no_body(client: TestClient, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 200
    assert response.content == b""


def test_readiness_is_400_with_no_model_loaded(settings: Settings, tmp_path: Any) -> None:
    empty = settings.model_copy(update={"model_store_dir": tmp_path / "empty"})

    with TestClient(create_app(empty)) as client:
        live, ready = client.get("/v2/health/live"), client.get("/v2/health/ready")

    assert (live.status_code, ready.status_code) == (200, 400)


def test_model_metadata_describes_the_store_signature(client: TestClient) -> None:
    response = client.get("/v2/models/cnn")

    assert response.status_code == 200
    assert response.json() == {
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
    assert client.get("/v2/models/cnn/versions/1").json() == response.json()


def test_ensemble_metadata_has_only_probabilities(client: TestClient) -> None:
    response = client.get("/v2/models/ensemble")

    assert response.json()["platform"] == "ensemble"
    assert response.json()["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/nope",
        "/v2/models/cnn/versions/2",
        "/v2/models/cnn/versions/one",
        "/v2/models/ensemble/versions/2",
        "/v2/models/nope/ready",
        "/v2/models/cnn/versions/2/ready",
    ],
)
def test_model_not_loaded_returns_404_naming_the_loaded_models(client: TestClient, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 404
    assert "loaded models: cnn, lenet5, mlp, ensemble" in response.json()["error"]


def test_unknown_v2_route_returns_404_in_the_protocol_shape(client: TestClient) -> None:
    response = client.get("/v2/repository/index")

    assert response.status_code == 404
    assert response.json() == {"error": "Not Found"}


@pytest.mark.parametrize("path", ["/v2/models/mlp/infer", "/v2/models/mlp/versions/1/infer"])
def test_infer_returns_each_rows_logits(client: TestClient, path: str) -> None:
    response = client.post(path, json=pixels_request(id="7"))

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("mlp", "1", "7")
    assert [output["name"] for output in body["outputs"]] == ["output__0"]
    np.testing.assert_array_equal(tensor(body, "output__0"), np.tile(FIXED_LOGITS["mlp"], (3, 1)))


def test_infer_probabilities_and_ensemble_equal_predict(client: TestClient, digit_png: bytes) -> None:
    predicted = client.post("/predict", files=upload(digit_png)).json()

    per_model = {
        name: client.post(f"/v2/models/{name}/infer", json=image_request(digit_png, outputs=outputs("probabilities")))
        for name in ("cnn", "lenet5", "mlp")
    }
    ensemble = client.post("/v2/models/ensemble/infer", json=image_request(digit_png))

    for prediction in predicted["predictions"]:
        np.testing.assert_allclose(
            tensor(per_model[prediction["model"]].json(), "probabilities")[0], prediction["probabilities"], rtol=1e-6
        )
    np.testing.assert_allclose(tensor(ensemble.json(), "probabilities")[0], predicted["ensemble"]["probabilities"])


def test_infer_binary_request_gets_binary_outputs(client: TestClient) -> None:
    tensor_input = triton.InferInput("input__0", list(PIXELS.shape), "FP32")
    tensor_input.set_data_from_numpy(PIXELS)
    body, json_size = triton.InferenceServerClient.generate_request_body([tensor_input])

    response = client.post(
        "/v2/models/lenet5/infer", content=body, headers={"Inference-Header-Content-Length": str(json_size)}
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    header_length = int(response.headers["inference-header-content-length"])
    result = triton.InferenceServerClient.parse_response_body(response.content, header_length=header_length)
    np.testing.assert_array_equal(result.as_numpy("output__0"), np.tile(FIXED_LOGITS["lenet5"], (3, 1)))


def test_infer_raw_images_go_through_preprocessing(client: TestClient, digit_png: bytes) -> None:
    jpeg = png_bytes(draw_seven(size=200).convert("RGB"), "JPEG")

    response = client.post("/v2/models/cnn/infer", json=image_request(digit_png, jpeg))

    assert response.status_code == 200
    np.testing.assert_array_equal(tensor(response.json(), "output__0"), np.tile(FIXED_LOGITS["cnn"], (2, 1)))


INVALID = {
    "wrong shape": (pixels_request(PIXELS[:, 0]), "must be FP32 of shape [N, 1, 28, 28], got FP32 [3, 28, 28]"),
    "wrong datatype": (
        {"inputs": [{"name": "input__0", "shape": [1, 1, 28, 28], "datatype": "FP64", "data": [0.0] * 784}]},
        "must be FP32 of shape",
    ),
    "out of range": (pixels_request(PIXELS * 255), "must hold values in [0, 1]"),
    "no rows": (pixels_request(PIXELS[:0]), "between 1 and 16 rows"),
    "too many rows": (pixels_request(np.zeros((17, 1, 28, 28), np.float32)), "between 1 and 16 rows"),
    "unknown input": (
        {"inputs": [{"name": "pixels", "shape": [1], "datatype": "FP32", "data": [0]}]},
        "exactly one input: 'input__0' (pixels) or 'image' (image files)",
    ),
    "unknown output": (pixels_request(outputs=outputs("labels")), "has the outputs output__0, probabilities"),
    "classification": (
        pixels_request(outputs=[{"name": "output__0", "parameters": {"classification": 3}}]),
        "classification extension is not supported",
    ),
    "image of wrong shape": (
        {"inputs": [{"name": "image", "shape": [1, 2], "datatype": "BYTES", "data": ["", ""]}]},
        "must be BYTES of shape [N] or [N, 1]",
    ),
}


@pytest.mark.parametrize(("request_json", "message"), INVALID.values(), ids=INVALID.keys())
def test_infer_invalid_tensors_return_400(client: TestClient, request_json: dict[str, Any], message: str) -> None:
    response = client.post("/v2/models/cnn/infer", json=request_json)

    assert response.status_code == 400
    assert message in response.json()["error"]


def test_infer_ensemble_has_no_logits_output(client: TestClient) -> None:
    response = client.post("/v2/models/ensemble/infer", json=pixels_request(outputs=outputs("output__0")))

    assert response.status_code == 400
    assert response.json() == {"error": "Model 'ensemble' has the outputs probabilities."}


def test_infer_unknown_model_returns_404(client: TestClient) -> None:
    response = client.post("/v2/models/resnet/infer", json=pixels_request())

    assert response.status_code == 404
    assert response.json()["error"].startswith("No such model or version is loaded")


def test_infer_compressed_body_returns_400(client: TestClient) -> None:
    response = client.post(
        "/v2/models/cnn/infer", content=json.dumps(pixels_request()), headers={"Content-Encoding": "gzip"}
    )

    assert response.status_code == 400
    assert response.json() == {"error": "Compressed request bodies are not supported; send the body uncompressed."}


def test_infer_body_over_the_upload_limit_returns_413(client: TestClient, settings: Settings) -> None:
    response = client.post("/v2/models/cnn/infer", content=b" " * (settings.max_upload_bytes + 1))

    assert response.status_code == 413
    assert response.json() == {
        "error": f"The upload is larger than the limit of {settings.max_upload_bytes} bytes. Send a smaller file."
    }


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        (b"not an image", 415, errors.UnsupportedMediaTypeError),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 400, errors.InvalidImageError),
        (png_bytes(draw_seven(ink=255)), 422, errors.NoDigitFoundError),
    ],
    ids=["not an image", "corrupt", "no digit"],
)
def test_infer_bad_image_returns_the_predict_status(
    client: TestClient, data: bytes, status: int, error: type[errors.ServiceError]
) -> None:
    response = client.post("/v2/models/cnn/infer", json=image_request(data))

    assert response.status_code == status
    assert response.json() == {"error": error.default_detail}


def test_infer_queue_full_returns_503_with_retry_after(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object) -> None:
        raise errors.QueueFullError()

    monkeypatch.setattr(client.app_state[STATE_KEY].batcher, "check_intake", refuse)

    response = client.post("/v2/models/cnn/infer", json=pixels_request())

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"error": OVERLOADED}


def test_our_api_keeps_its_detail_errors(client: TestClient) -> None:
    assert client.get("/models/nope").json() == {"detail": errors.ModelNotFoundHTTPError.default_detail}
    assert client.get("/nowhere").json() == {"detail": "Not Found"}
