"""The store contract: atomic, never-overwriting publication; verified reads; safe addressing; pruning."""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from contract import (
    CHECK_OUTPUT_SPEC,
    CONFIG_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    IntegrityError,
    ManifestError,
    ModelCard,
    ModelNotFoundError,
    ModelStore,
    VersionNotFoundError,
)
from contract.store import sha256_bytes

CARD = ModelCard(torch_version="test", parameters=3, metrics={"accuracy": 0.99}, training_config={"epochs": 1})


def _publish(store: ModelStore, payload: bytes = b"weights", name: str = "cnn") -> int:
    return store.publish(name, payload, CARD, extra_files={"report.md": b"# report"}).version


def _publish_in_process(root: str, payload: bytes) -> int:
    return _publish(ModelStore(Path(root)), payload)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store")


def test_publish_writes_triton_layout_and_manifest(store: ModelStore) -> None:
    assert _publish(store, b"one") == 1
    assert _publish(store, b"two") == 2
    folder = store.root / "cnn"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["1", "2", CONFIG_FILE]
    config = (folder / CONFIG_FILE).read_text()
    assert 'platform: "pytorch_libtorch"' in config
    assert "dims: [ 1, 28, 28 ]" in config
    verified = store.read_verified("cnn", 2)
    assert verified.model_bytes == b"two"
    assert verified.manifest.sha256 == sha256_bytes(b"two")
    assert verified.manifest.metrics == {"accuracy": 0.99}
    assert (folder / "2" / "report.md").read_bytes() == b"# report"
    assert store.model_names() == ["cnn"]


def test_concurrent_thread_publishers_get_distinct_complete_versions(store: ModelStore) -> None:
    payloads = [f"model-{i}".encode() for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        versions = list(pool.map(lambda p: _publish(store, p), payloads))
    assert sorted(versions) == list(range(1, 9))
    assert {store.read_verified("cnn", v).model_bytes for v in versions} == set(payloads)
    assert not [p for p in (store.root / "cnn").iterdir() if p.name.startswith(".tmp-")]


def test_concurrent_process_publishers_get_distinct_versions(store: ModelStore) -> None:
    store.root.mkdir(parents=True)
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        versions = pool.starmap(_publish_in_process, [(str(store.root), f"p{i}".encode()) for i in range(4)])
    assert sorted(versions) == [1, 2, 3, 4]


def test_tampered_model_is_refused(store: ModelStore) -> None:
    _publish(store)
    (store.version_dir("cnn", 1) / MODEL_FILE).write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match="does not match the sha256"):
        store.read_verified("cnn", 1)


def test_missing_model_file_is_refused(store: ModelStore) -> None:
    _publish(store)
    (store.version_dir("cnn", 1) / MODEL_FILE).unlink()
    with pytest.raises(IntegrityError, match="missing"):
        store.read_verified("cnn", 1)


def test_half_written_version_folder_is_refused_and_never_reused(store: ModelStore) -> None:
    _publish(store)
    broken = store.root / "cnn" / "2"
    broken.mkdir()
    (broken / MODEL_FILE).write_bytes(b"partial")
    with pytest.raises(ManifestError, match="missing"):
        store.read_verified("cnn", 2)
    assert _publish(store, b"next") == 3


@pytest.mark.parametrize("content", [b"{not json", b'{"name": "cnn"}', b"[]"])
def test_malformed_manifest_is_refused(store: ModelStore, content: bytes) -> None:
    _publish(store)
    (store.version_dir("cnn", 1) / MANIFEST_FILE).write_bytes(content)
    with pytest.raises(ManifestError, match="malformed"):
        store.read_manifest("cnn", 1)


def test_manifest_describing_another_version_is_refused(store: ModelStore) -> None:
    _publish(store)
    _publish(store, b"two")
    manifest_two = (store.version_dir("cnn", 2) / MANIFEST_FILE).read_bytes()
    (store.version_dir("cnn", 1) / MANIFEST_FILE).write_bytes(manifest_two)
    with pytest.raises(ManifestError, match="describes cnn v2"):
        store.read_manifest("cnn", 1)


def test_resolve_latest_and_pinned(store: ModelStore) -> None:
    _publish(store, b"a")
    _publish(store, b"b")
    assert store.resolve("cnn") == 2
    assert store.resolve("cnn", 1) == 1
    with pytest.raises(VersionNotFoundError, match="no version 7"):
        store.resolve("cnn", 7)
    with pytest.raises(ModelNotFoundError, match="no versions"):
        store.resolve("mlp")


@pytest.mark.parametrize("name", ["../cnn", "/etc", "a/b", "..", "%2e%2e", "CNN", "", "x" * 40, "cnn\x00"])
def test_names_outside_the_alphabet_never_reach_the_file_system(store: ModelStore, name: str) -> None:
    with pytest.raises(ModelNotFoundError, match="invalid model name"):
        store.model_dir(name)


@pytest.mark.parametrize("version", [0, -1, True])
def test_versions_must_be_positive_integers(store: ModelStore, version: int) -> None:
    with pytest.raises(VersionNotFoundError, match="positive integers"):
        store.version_dir("cnn", version)


def test_extra_files_cannot_replace_the_model_or_escape(store: ModelStore) -> None:
    for bad in (MODEL_FILE, MANIFEST_FILE, "../x", ".hidden"):
        with pytest.raises(ValueError, match="reserved or not a plain file name"):
            store.publish("cnn", b"m", CARD, extra_files={bad: b"x"})
    assert store.versions("cnn") == []
    assert not [p for p in (store.root / "cnn").iterdir() if p.name.startswith(".tmp-")]


def test_prune_keeps_the_newest(store: ModelStore) -> None:
    for i in range(4):
        _publish(store, f"v{i}".encode())
    assert store.prune("cnn", keep=2) == [1, 2]
    assert store.versions("cnn") == [3, 4]
    with pytest.raises(ValueError, match="at least 1"):
        store.prune("cnn", keep=0)


def test_models_are_listed_by_the_kind_their_newest_manifest_states(store: ModelStore) -> None:
    _publish(store, name="cnn")
    check_card = CARD.model_copy(update={"kind": "digit_check", "output": CHECK_OUTPUT_SPEC, "pass_threshold": 0.3})
    store.publish("check", b"check", check_card)
    # A model with no readable manifest is listed under every kind, so whoever loads it can say what is wrong.
    (store.root / "broken" / "1").mkdir(parents=True)

    assert store.model_names() == ["broken", "check", "cnn"]
    assert store.model_names("digit_classifier") == ["broken", "cnn"]
    assert store.model_names("digit_check") == ["broken", "check"]
    assert store.read_manifest("cnn", 1).kind == "digit_classifier"
    assert store.read_manifest("check", 1).pass_threshold == 0.3
    assert "dims: [ 3 ]" in (store.root / "check" / CONFIG_FILE).read_text()
    assert "dims: [ 10 ]" in (store.root / "cnn" / CONFIG_FILE).read_text()


def test_manifests_without_a_kind_describe_digit_classifiers(store: ModelStore) -> None:
    _publish(store)
    path = store.version_dir("cnn", 1) / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    del manifest["kind"], manifest["pass_threshold"]
    path.write_text(json.dumps(manifest))

    assert store.read_manifest("cnn", 1).kind == "digit_classifier"
