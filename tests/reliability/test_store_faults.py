"""A faulty model store, end to end: the service refuses exactly the bad versions, serves the rest and says why.

Each fault is one a real store meets: a model file altered after publishing, a version folder left half-written by
a crash during a non-atomic copy, a malformed manifest, files that cannot be read, a pinned version that is not
there. The server process reads the store as in production (``DIGITS_*`` variables, its own log).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from contract import MANIFEST_FILE, MODEL_FILE, ModelStore
from service import errors
from service.config import Settings
from service.main import create_app
from tests.support.admin import ADMIN, ADMIN_TOKEN
from tests.support.servers import ServerFactory, server_env
from tests.support.stand_ins import FixedLogits, publish
from tests.support.uploads import draw_seven, png_bytes, upload

TIMEOUT_S = 10.0
SHA_MISMATCH = "model.pt does not match the sha256 in its manifest"
HALF_WRITTEN = "manifest.json is missing (incomplete publish?)"


def tamper(store: ModelStore, name: str, version: int) -> None:
    """Flip one byte in the middle of the model file, as disk corruption or a careless edit would."""
    path = store.version_dir(name, version) / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def crash_mid_copy(store: ModelStore, name: str, version: int, source_version: int = 1) -> None:
    """A version folder as a crashed ``cp -r`` leaves it: half the model file, no manifest yet."""
    folder = store.version_dir(name, version)
    folder.mkdir()
    model = (store.version_dir(name, source_version) / MODEL_FILE).read_bytes()
    (folder / MODEL_FILE).write_bytes(model[: len(model) // 2])


def served_sha256(store: ModelStore, name: str, version: int) -> str:
    return hashlib.sha256((store.version_dir(name, version) / MODEL_FILE).read_bytes()).hexdigest()


@pytest.fixture
def faulty_store(store: ModelStore) -> ModelStore:
    """cnn and lenet5: a good v1 under a bad v2; mlp: a good v1 (pinned to a v5 that does not exist);
    ``forged``, ``garbled`` and ``unreadable``: a single, bad version each."""
    publish(store, "cnn")
    tamper(store, "cnn", 2)
    crash_mid_copy(store, "lenet5", 2)
    for name in ("forged", "garbled", "unreadable"):
        publish(store, name, FixedLogits([1.0] + [0.0] * 9))
    tamper(store, "forged", 1)
    (store.version_dir("garbled", 1) / MANIFEST_FILE).write_text('{"name": "garbled", "version": ')
    # A folder where the manifest file belongs: reading it fails with an OSError, not a store error.
    manifest = store.version_dir("unreadable", 1) / MANIFEST_FILE
    manifest.unlink()
    manifest.mkdir()
    return store


def by_name(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in entries}


def test_server_refuses_exactly_the_bad_versions_and_serves_the_rest(
    faulty_store: ModelStore, serve: ServerFactory
) -> None:
    server = serve(server_env(faulty_store.root, model_versions="mlp=5"))

    with httpx.Client(base_url=server.url, timeout=TIMEOUT_S) as client:
        ready = client.get("/health/ready")
        models = client.get("/models").json()
        prediction = client.post("/predict", files=upload(png_bytes(draw_seven())))
        refused = {
            name: client.post("/predict", params={"models": name}, files=upload(b"x"))
            for name in ("forged", "garbled", "unreadable", "mlp")
        }

    assert ready.status_code == 200
    assert ready.json()["models"] == ["cnn", "lenet5"]
    served = by_name(models["models"])
    assert {name: (model["version"], model["state"], model["problems"]) for name, model in served.items()} == {
        "cnn": (1, "fallback", [f"cnn v2: {SHA_MISMATCH}"]),
        "lenet5": (1, "fallback", [f"lenet5 v2: {HALF_WRITTEN}"]),
    }
    # What is served is what was verified: the checksum of the file on disk, not of the tampered one.
    assert served["cnn"]["sha256"] == served_sha256(faulty_store, "cnn", 1)
    assert by_name(models["unavailable"]) == {
        "forged": {"name": "forged", "requested_version": "latest", "problems": [f"forged v1: {SHA_MISMATCH}"]},
        "garbled": {
            "name": "garbled",
            "requested_version": "latest",
            "problems": ["garbled v1: manifest.json is malformed"],
        },
        "mlp": {"name": "mlp", "requested_version": 5, "problems": ["model 'mlp' has no version 5; available: [1]"]},
        "unreadable": {
            "name": "unreadable",
            "requested_version": "latest",
            "problems": ["unreadable v1: its files cannot be read"],
        },
    }
    assert str(faulty_store.root) not in str(models)
    assert prediction.status_code == 200
    assert [(p["model"], p["version"]) for p in prediction.json()["predictions"]] == [("cnn", 1), ("lenet5", 1)]
    for response in refused.values():
        assert response.status_code == 422
        assert response.json() == {"detail": errors.UnknownModelError.default_detail}
    log = server.log()
    for line in (
        f"model cnn: refused: cnn v2: {SHA_MISMATCH}",
        f"model lenet5: refused: lenet5 v2: {HALF_WRITTEN}",
        f"model forged: refused: forged v1: {SHA_MISMATCH}",
        "model garbled: refused: garbled v1: manifest.json is malformed",
        "model unreadable: refused: unreadable v1: its files cannot be read",
        "model mlp (5) is not served",
        "model forged (latest) is not served",
        "serving on cpu: cnn v1, lenet5 v1",
    ):
        assert line in log


def test_reload_skips_a_publish_cut_short_and_takes_the_finished_one(store: ModelStore, serve: ServerFactory) -> None:
    server = serve(server_env(store.root, admin_token=ADMIN_TOKEN))

    with httpx.Client(base_url=server.url, timeout=TIMEOUT_S) as client:
        crash_mid_copy(store, "cnn", 2)
        after_crash = client.post("/models/reload", headers=ADMIN).json()
        during = client.post("/predict", params={"models": "cnn"}, files=upload(png_bytes(draw_seven())))
        publish(store, "cnn", FixedLogits([0.0] * 9 + [5.0]))
        after_publish = client.post("/models/reload", headers=ADMIN).json()
        after = client.post("/predict", params={"models": "cnn"}, files=upload(png_bytes(draw_seven())))

    assert after_crash["changes"] == []
    assert (by_name(after_crash["models"])["cnn"]["version"], by_name(after_crash["models"])["cnn"]["problems"]) == (
        1,
        [f"cnn v2: {HALF_WRITTEN}"],
    )
    assert during.json()["predictions"][0]["version"] == 1
    assert after_publish["changes"] == [{"name": "cnn", "old_version": 1, "new_version": 3}]
    assert by_name(after_publish["models"])["cnn"]["state"] == "serving"
    assert (after.json()["predictions"][0]["version"], after.json()["predictions"][0]["label"]) == (3, 9)


def test_store_with_nothing_servable_is_not_ready_and_says_why(
    store: ModelStore, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    for name in store.model_names():
        tamper(store, name, 1)

    with caplog.at_level(logging.ERROR), TestClient(create_app(settings)) as client:
        ready = client.get("/health/ready")
        prediction = client.post("/predict", files=upload(png_bytes(draw_seven())))
        models = client.get("/models").json()

    assert ready.status_code == 503
    assert prediction.status_code == 503
    assert prediction.json() == {"detail": errors.ServiceUnavailableError.default_detail}
    assert models["models"] == []
    assert [(m["name"], m["problems"]) for m in models["unavailable"]] == [
        (name, [f"{name} v1: {SHA_MISMATCH}"]) for name in ("cnn", "lenet5", "mlp")
    ]
    assert "no model could be loaded" in caplog.text
