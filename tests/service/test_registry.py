"""The registry against real store folders: which version it serves, what it refuses and why, and hot reload."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
import torch

from contract import LINE_READER, MANIFEST_FILE, MODEL_FILE, ModelCard, ModelStore
from contract.torchscript import to_torchscript
from service.registry import ModelChange, ModelLoadError, ModelRegistry, load_model
from tests.support.stand_ins import (
    FIXED_LOGITS,
    MODEL_NAMES,
    FixedLogits,
    WrongOutput,
    publish,
    publish_check,
    stand_in_card,
)
from training.models import LineReader

CPU = torch.device("cpu")


def make_registry(
    store: ModelStore,
    names: Sequence[str] = (),
    pinned: Mapping[str, int] | None = None,
    digit_check: bool = True,
) -> ModelRegistry:
    registry = ModelRegistry(store, CPU, names=names, pinned=pinned, digit_check=digit_check)
    registry.refresh()
    return registry


def tamper(store: ModelStore, name: str, version: int) -> None:
    path = store.version_dir(name, version) / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_load_model_verifies_and_returns_a_working_module(store: ModelStore) -> None:
    loaded = load_model(store, "mlp", 1, CPU, warmup_batch_sizes=(1, 4))

    assert (loaded.name, loaded.version) == ("mlp", 1)
    with torch.inference_mode():
        logits = loaded(torch.zeros(3, 1, 28, 28))
    assert torch.allclose(logits, torch.tensor([FIXED_LOGITS["mlp"]] * 3))


def test_every_model_in_the_store_is_served_at_its_latest_version(store: ModelStore) -> None:
    publish(store, "mlp")

    registry = make_registry(store)

    assert registry.models.names() == sorted(MODEL_NAMES)
    assert registry.models["mlp"].version == 2
    assert {status.state for status in registry.statuses.values()} == {"serving"}


def test_models_setting_selects_and_orders_models(store: ModelStore) -> None:
    registry = make_registry(store, names=["mlp", "cnn"])

    assert registry.models.names() == ["mlp", "cnn"]


def test_pinned_version_is_served_instead_of_latest(store: ModelStore) -> None:
    publish(store, "mlp")

    registry = make_registry(store, pinned={"mlp": 1})

    assert registry.models["mlp"].version == 1
    assert registry.statuses["mlp"].state == "serving"


def test_unknown_pinned_version_is_refused_and_the_rest_served(
    store: ModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="service.registry"):
        registry = make_registry(store, pinned={"mlp": 7})

    status = registry.statuses["mlp"]
    assert status.state == "failed"
    assert status.problems == ("model 'mlp' has no version 7; available: [1]",)
    assert "mlp" not in registry.models
    assert registry.models.names() == ["cnn", "lenet5"]
    assert "model mlp (7) is not served" in caplog.text


def test_tampered_model_is_never_served(store: ModelStore, caplog: pytest.LogCaptureFixture) -> None:
    tamper(store, "cnn", 1)

    with caplog.at_level(logging.ERROR, logger="service.registry"):
        registry = make_registry(store)

    assert "cnn" not in registry.models
    assert registry.statuses["cnn"].problems == ("cnn v1: model.pt does not match the sha256 in its manifest",)
    assert "model cnn: refused: cnn v1: model.pt does not match the sha256" in caplog.text


def test_broken_latest_falls_back_to_the_newest_verified_older_version(store: ModelStore) -> None:
    publish(store, "cnn")
    publish(store, "cnn")
    tamper(store, "cnn", 3)

    registry = make_registry(store)

    status = registry.statuses["cnn"]
    assert registry.models["cnn"].version == 2
    assert status.state == "fallback"
    assert status.problems == ("cnn v3: model.pt does not match the sha256 in its manifest",)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda folder: (folder / MANIFEST_FILE).unlink(), "manifest.json is missing (incomplete publish?)"),
        (lambda folder: (folder / MANIFEST_FILE).write_text("{not json"), "manifest.json is malformed"),
        (lambda folder: (folder / MODEL_FILE).unlink(), "model.pt is missing"),
    ],
    ids=["missing-manifest", "malformed-manifest", "missing-model"],
)
def test_damaged_version_folder_is_refused(store: ModelStore, damage: Callable[[Path], object], problem: str) -> None:
    publish(store, "lenet5")
    damage(store.version_dir("lenet5", 2))

    registry = make_registry(store)

    assert registry.models["lenet5"].version == 1
    assert registry.statuses["lenet5"].problems == (f"lenet5 v2: {problem}",)


def test_half_written_publish_leftovers_are_ignored(store: ModelStore) -> None:
    # A crash during publish leaves a hidden staging folder; it never becomes a version.
    staging = store.model_dir("mlp") / ".tmp-0123456789abcdef"
    staging.mkdir()
    (staging / MODEL_FILE).write_bytes(b"partial")

    registry = make_registry(store)

    assert registry.models["mlp"].version == 1
    assert registry.statuses["mlp"].problems == ()


@pytest.mark.parametrize(
    ("module", "problem"),
    [
        (WrongOutput(), "mlp v2: warm-up failed: output is (1, 5), expected (1, 10) logits"),
        (FixedLogits([float("nan")] * 10), "mlp v2: warm-up failed: output contains NaN or infinite values"),
    ],
    ids=["wrong-shape", "nan"],
)
def test_model_that_fails_warm_up_is_refused(store: ModelStore, module: torch.nn.Module, problem: str) -> None:
    publish(store, "mlp", module)

    registry = make_registry(store)

    assert registry.models["mlp"].version == 1
    assert registry.statuses["mlp"].problems == (problem,)


def test_verified_file_that_is_not_torchscript_is_refused(store: ModelStore) -> None:
    store.publish("mlp", b"not a zip archive", stand_in_card("mlp"))

    with pytest.raises(ModelLoadError, match=r"^mlp v2: model.pt is not a loadable TorchScript module$"):
        load_model(store, "mlp", 2, CPU)


@pytest.mark.parametrize("name", ["../mlp", "/etc", "mlp/../../x", "MLP"])
def test_names_that_could_leave_the_store_are_refused(store: ModelStore, name: str) -> None:
    registry = make_registry(store, names=[name, "mlp"])

    assert registry.models.names() == ["mlp"]
    (problem,) = registry.statuses[name].problems
    assert problem.startswith(f"invalid model name {name!r}")


def test_missing_model_is_reported(store: ModelStore) -> None:
    registry = make_registry(store, names=["mlp", "absent"])

    assert registry.statuses["absent"].problems == ("model 'absent' has no versions in the store",)


def test_refresh_swaps_in_a_new_version_and_leaves_old_snapshots_intact(store: ModelStore) -> None:
    registry = make_registry(store)
    before = registry.models
    publish(store, "mlp", FixedLogits([1.0] + [0.0] * 9))

    changes = registry.refresh()

    assert changes == [ModelChange("mlp", 1, 2)]
    assert registry.models["mlp"].version == 2
    assert before["mlp"].version == 1
    # Unchanged models are the very same loaded objects: nothing is reloaded needlessly.
    assert registry.models["cnn"] is before["cnn"]
    with torch.inference_mode():
        assert int(before["mlp"](torch.zeros(1, 1, 28, 28)).argmax()) == 7
        assert int(registry.models["mlp"](torch.zeros(1, 1, 28, 28)).argmax()) == 0


def test_refresh_keeps_serving_when_the_new_version_is_broken(store: ModelStore) -> None:
    registry = make_registry(store)
    publish(store, "mlp")
    tamper(store, "mlp", 2)

    changes = registry.refresh()

    assert changes == []
    assert registry.models["mlp"].version == 1
    assert registry.statuses["mlp"].state == "fallback"


def test_refresh_picks_up_a_model_published_later(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    registry = make_registry(store)
    assert registry.models.names() == []

    publish(store, "cnn")

    assert registry.refresh() == [ModelChange("cnn", None, 1)]
    assert registry.models.names() == ["cnn"]


def test_refresh_never_drops_a_served_model(store: ModelStore) -> None:
    registry = make_registry(store)

    for version in store.versions("cnn"):
        (store.version_dir("cnn", version) / MODEL_FILE).unlink()
        (store.version_dir("cnn", version) / MANIFEST_FILE).unlink()
        store.version_dir("cnn", version).rmdir()
    registry.refresh()

    assert registry.models["cnn"].version == 1
    assert registry.statuses["cnn"].problems == ("model 'cnn' has no versions in the store",)


def test_digit_check_is_served_beside_the_classifiers_never_as_one(store: ModelStore) -> None:
    publish_check(store)

    registry = make_registry(store, names=["mlp"])

    assert registry.models.classifiers() == ["mlp"]
    assert registry.models.names() == ["mlp", "check"]
    assert registry.models.check is not None
    assert (registry.models.check.name, registry.models.check.manifest.kind) == ("check", "digit_check")
    assert registry.statuses["check"].state == "serving"


def test_digit_check_can_be_turned_off(store: ModelStore) -> None:
    publish_check(store)

    registry = make_registry(store, digit_check=False)

    assert registry.models.names() == sorted(MODEL_NAMES)
    assert registry.models.check is None
    assert "check" not in registry.statuses


def test_digit_check_with_the_wrong_output_width_is_refused(store: ModelStore) -> None:
    publish_check(store, logits=[0.0] * 10)

    registry = make_registry(store)

    assert registry.models.check is None
    assert registry.statuses["check"].problems == (
        "check v1: warm-up failed: output is (1, 10), expected (1, 3) logits",
    )


@pytest.mark.parametrize(("frames_stated", "served"), [(2, True), (4, False)])
def test_a_line_reader_is_served_only_at_the_frame_width_its_manifest_states(
    store: ModelStore, frames_stated: int, served: bool
) -> None:
    card = ModelCard(
        torch_version=torch.__version__,
        parameters=0,
        kind="line_reader",
        input=LINE_READER.input,
        output=LINE_READER.output,
        frame_pixels=frames_stated,
    )
    store.publish("reader", to_torchscript(LineReader(frame_pixels=2)), card)

    registry = make_registry(store)

    assert ("reader" in registry.models) is served
    if not served:
        assert registry.statuses["reader"].problems == (
            "reader v1: warm-up failed: output is (1, 32, 11), expected (1, 16, 11) logits",
        )
