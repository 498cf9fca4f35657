"""The comparison's measurements: USPS reading, pin parsing and the generator on a tiny store."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from contract import ModelStore
from contract.ensemble import calibrated_log_probs, ensemble_probs
from contract.torchscript import load_torchscript
from evaluation.corruptions import SWEEPS, centre_of_mass, prepare_like_service
from evaluation.report import REPORT_FILE, ROBUSTNESS_PNG
from evaluation.results import ENSEMBLE, Comparison, mcnemar_exact
from evaluation.run import (
    CompareOptions,
    build_comparison,
    count_macs,
    load_usps,
    main,
    parse_pins,
    usps_as_stored,
)
from tests.support.mnist import write_mnist
from training.data import DataError, balanced_subset, load_mnist
from training.export import publish_model
from training.train import build_network, to_inputs

NAMES = ("mlp", "lenet5", "cnn")
TEMPERATURES = {"mlp": 1.0, "lenet5": 2.0, "cnn": 0.5}
WEIGHTS = {"mlp": 0.2, "lenet5": 0.3, "cnn": 0.5}
TEST_IMAGES = 60
LIMIT = 30
USPS_DIGITS = 20


def test_parse_pins_reads_name_equals_version() -> None:
    assert parse_pins(["cnn=2", "mlp=11"]) == {"cnn": 2, "mlp": 11}
    for bad in ("cnn", "cnn=", "cnn=0", "cnn=latest", "=3"):
        with pytest.raises(ValueError, match="expected name=version"):
            parse_pins([bad])


def test_main_rejects_a_malformed_pin(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--versions", "cnn=latest"])
    assert exit_info.value.code == 2
    assert "expected name=version" in capsys.readouterr().err


# -- USPS ------------------------------------------------------------------------------------------------------------


def usps_line(label: int, ink_rows: slice, ink_cols: slice) -> str:
    values = -np.ones((16, 16))
    values[ink_rows, ink_cols] = 1.0
    return " ".join([str(label), *(f"{v:.4f}" for v in values.flat)])


def write_usps(path: Path, count: int) -> Path:
    """A USPS-format file of ``count`` bar-shaped digits, labels cycling through 0-9."""
    lines = [usps_line(i % 10, slice(1, 15), slice(6 + i % 3, 9 + i % 3)) for i in range(count)]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


def test_load_usps_maps_the_ink_to_white_and_reads_the_labels(tmp_path: Path) -> None:
    path = tmp_path / "zip.test.gz"
    path.write_bytes(gzip.compress((usps_line(7, slice(2, 5), slice(3, 4)) + "\n").encode()))
    images, labels = load_usps(path)
    assert labels.tolist() == [7]
    assert images.dtype == torch.uint8 and images.shape == (1, 16, 16)
    assert int(images[0, 2, 3]) == 255 and int(images[0, 0, 0]) == 0
    assert int(images.sum()) == 255 * 3


@pytest.mark.parametrize(
    ("content", "message"),
    [("3 1 2 3\n", "expected lines of a label and 256 values"), ("12 " + "0 " * 256 + "\n", "digits 0-9")],
)
def test_load_usps_rejects_a_malformed_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "zip.test.gz"
    path.write_bytes(gzip.compress(content.encode()))
    with pytest.raises(DataError, match=message):
        load_usps(path)


def test_usps_digits_are_sent_edge_to_edge_as_the_data_comes(tmp_path: Path) -> None:
    images, _ = load_usps(write_usps(tmp_path / "zip.test.gz", 3))
    stored = usps_as_stored(images)
    assert stored.shape == (3, 1, 16, 16)
    torch.testing.assert_close(stored[:, 0], images.float() / 255.0)
    prepared, refused = prepare_like_service(stored)
    assert not refused.any()
    # The service scales the 14-pixel-tall bar to the 20-pixel box and centres it by mass at (14, 14).
    rows = torch.nonzero(prepared[0, 0].sum(dim=1)).flatten()
    assert int(rows[-1] - rows[0]) + 1 == 20
    torch.testing.assert_close(centre_of_mass(prepared), torch.full((3, 2), 14.0), atol=0.501, rtol=0)


# -- the generator on a tiny store -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TinyStore:
    store: ModelStore
    data_dir: Path
    usps_path: Path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyStore]:
    """Randomly initialised mlp, lenet5 and cnn published through the exporter, a tiny MNIST and a tiny USPS."""
    root = tmp_path_factory.mktemp("compare")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    store = ModelStore(root / "store")
    check_images = torch.rand(4, 1, 28, 28)
    for name in NAMES:
        publish_model(
            store, name, build_network(name), check_images,
            temperature=TEMPERATURES[name], ensemble_weight=WEIGHTS[name], metrics={}, training_config={},
            data_checksums={}, commit=None, extra_files={},
        )  # fmt: skip
    write_mnist(root / "mnist", train=10, test=TEST_IMAGES)
    yield TinyStore(store, root / "mnist", write_usps(root / "zip.test.gz", USPS_DIGITS))
    torch.set_num_threads(previous)


def options(tiny: TinyStore) -> CompareOptions:
    return CompareOptions(
        store=tiny.store,
        pins={},
        data_dir=tiny.data_dir,
        usps_path=tiny.usps_path,
        limit=LIMIT,
        seed=0,
        timing_threads=1,
        robustness_images=12,
        latency_runs=2,
        throughput_runs=2,
    )


@pytest.fixture(scope="module")
def comparison(tiny: TinyStore) -> Comparison:
    return build_comparison(options(tiny))


def independent_predictions(tiny: TinyStore) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Argmax predictions of each stored model and of the ensemble rule on the report's subset, straight from torch."""
    images, labels = load_mnist(tiny.data_dir, "test")
    chosen = balanced_subset(labels, LIMIT, 0)
    inputs = to_inputs(images[chosen], torch.device("cpu"))
    log_probs = {}
    with torch.inference_mode():
        for name in NAMES:
            module = load_torchscript(tiny.store.read_verified(name, 1).model_bytes)
            log_probs[name] = calibrated_log_probs(module(inputs), TEMPERATURES[name])
    predictions = {name: lp.argmax(dim=1) for name, lp in log_probs.items()}
    combined = ensemble_probs([log_probs[n] for n in NAMES], [WEIGHTS[n] for n in NAMES])
    predictions[ENSEMBLE] = combined.argmax(dim=1)
    return predictions, labels[chosen]


def test_accuracy_and_confusion_match_a_direct_computation(tiny: TinyStore, comparison: Comparison) -> None:
    predictions, labels = independent_predictions(tiny)
    assert [c.name for c in comparison.columns] == [*NAMES, ENSEMBLE]
    assert comparison.test_images == LIMIT
    for column in comparison.columns:
        expected = predictions[column.name]
        confusion = torch.zeros(10, 10, dtype=torch.long)
        for true, predicted in zip(labels.tolist(), expected.tolist(), strict=True):
            confusion[true, predicted] += 1
        assert column.test["confusion_matrix"] == confusion.tolist(), column.name
        assert column.test["accuracy"] == pytest.approx(float((expected == labels).double().mean()))


def test_agreement_and_mcnemar_match_a_direct_computation(tiny: TinyStore, comparison: Comparison) -> None:
    predictions, labels = independent_predictions(tiny)
    agree = (predictions["mlp"] == predictions["lenet5"]) & (predictions["lenet5"] == predictions["cnn"])
    agreement = comparison.agreement
    assert agreement.all_agree == int(agree.sum())
    accuracy = {name: float((predictions[name] == labels).double().mean()) for name in NAMES}
    assert accuracy[agreement.best_single] == max(accuracy.values())
    right = {name: predictions[name] == labels for name in [*NAMES, ENSEMBLE]}
    assert agreement.ensemble_only == int((right[ENSEMBLE] & ~right[agreement.best_single]).sum())
    assert agreement.best_only == int((right[agreement.best_single] & ~right[ENSEMBLE]).sum())
    assert agreement.p_value == mcnemar_exact(agreement.ensemble_only, agreement.best_only)


def test_costs_come_from_the_manifests_and_the_graph(tiny: TinyStore, comparison: Comparison) -> None:
    columns = {c.name: c for c in comparison.columns}
    for name in NAMES:
        manifest = tiny.store.read_manifest(name, 1)
        assert (columns[name].parameters, columns[name].size_bytes) == (manifest.parameters, manifest.size_bytes)
        assert columns[name].cpu.latency_ms > 0 and columns[name].cpu.throughput_per_s > 0
    assert columns[ENSEMBLE].parameters == sum(columns[n].parameters for n in NAMES)
    assert columns[ENSEMBLE].macs == sum(columns[n].macs for n in NAMES)


def test_macs_are_the_convolution_and_linear_layers_counted_by_hand(tiny: TinyStore) -> None:
    expected = {
        "mlp": 784 * 1024 + 1024 * 512 + 512 * 10,
        # C1 28x28x6 of 5x5, C3 10x10x16 of 6x5x5, C5 120 of 16x5x5, F6 120x84, output 84x10.
        "lenet5": 28 * 28 * 6 * 25 + 10 * 10 * 16 * 6 * 25 + 120 * 16 * 25 + 120 * 84 + 84 * 10,
        # 3x3 convolutions: 1->32 at 28x28, 32->64 and 64->64 at 14x14, 64->128 at 7x7, then 128x10.
        "cnn": 9 * (28 * 28 * 32 + 14 * 14 * (32 * 64 + 64 * 64) + 7 * 7 * 64 * 128) + 128 * 10,
    }
    for name, macs in expected.items():
        assert count_macs(tiny.store.read_verified(name, 1).model_bytes) == macs, name


def test_robustness_curves_start_at_the_clean_accuracy(comparison: Comparison) -> None:
    for column in comparison.columns:
        for sweep in SWEEPS:
            curve = column.robustness[sweep.name]
            assert len(curve) == len(sweep.levels)
            assert all(0.0 <= accuracy <= 1.0 for accuracy in curve)
    # Without a service step, every curve starts from the same uncorrupted images, hence the same accuracy.
    raw = [sweep for sweep in SWEEPS if sweep.then is None]
    for column in comparison.columns:
        clean = {column.robustness[s.name][s.levels.index(s.clean_level)] for s in raw}
        assert len(clean) == 1, column.name


def test_the_command_line_writes_the_markdown_with_the_directly_computed_numbers(
    tiny: TinyStore, tmp_path: Path
) -> None:
    out = tmp_path / "reports"
    argv = [
        "--store", str(tiny.store.root), "--data-dir", str(tiny.data_dir), "--usps", str(tiny.usps_path),
        "--out", str(out), "--limit", str(LIMIT), "--robustness-images", "12", "--latency-runs", "2",
        "--throughput-runs", "2", "--versions", "cnn=1",
    ]  # fmt: skip
    assert main(argv) == 0
    markdown = (out / REPORT_FILE).read_text(encoding="utf-8")
    predictions, labels = independent_predictions(tiny)
    cells = [f"{100 * float((predictions[n] == labels).double().mean()):.2f} %" for n in [*NAMES, ENSEMBLE]]
    row = next(line for line in markdown.splitlines() if line.startswith("| MNIST test accuracy"))
    assert [cell.strip().split(" [")[0] for cell in row.strip("|").split("|")[1:]] == cells
    assert f"USPS: {min(LIMIT, USPS_DIGITS)} test digits" in markdown
    assert "| multiply-accumulates per image | 1.33 M | 0.42 M | 14.68 M | 16.43 M |" in markdown
    assert (out / ROBUSTNESS_PNG).stat().st_size > 0


def test_the_command_line_reports_an_empty_store(tmp_path: Path) -> None:
    assert main(["--store", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()
