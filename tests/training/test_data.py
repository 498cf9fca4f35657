"""IDX parsing and its errors, the data directory setting, download fallback, and the split protocols."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.mnist import idx_bytes, write_mnist
from training import data
from training.config import TrainConfig
from training.data import (
    ALL_FILES,
    DataUnavailableError,
    IdxFormatError,
    balanced_subset,
    data_checksums,
    default_data_dir,
    load_mnist,
    load_splits,
    parse_idx,
    stratified_split,
)


@pytest.mark.parametrize("compress", [True, False])
def test_load_mnist_reads_gz_and_raw_files(tmp_path: Path, compress: bool) -> None:
    write_mnist(tmp_path, train=30, test=12, compress=compress)
    images, labels = load_mnist(tmp_path, "test")
    assert images.dtype == torch.uint8 and images.shape == (12, 28, 28)
    assert labels.dtype == torch.int64 and labels.tolist() == [i % 10 for i in range(12)]


def test_checksums_cover_the_uncompressed_bytes(tmp_path: Path) -> None:
    write_mnist(tmp_path / "gz", compress=True)
    write_mnist(tmp_path / "raw", compress=False)
    checksums = data_checksums(tmp_path / "gz")
    assert sorted(checksums) == sorted(ALL_FILES)
    assert checksums == data_checksums(tmp_path / "raw")


def test_parse_idx_rejects_a_bad_magic_number() -> None:
    payload = bytearray(idx_bytes(np.zeros((2, 28, 28))))
    payload[2] = 0x0D  # float32 type code
    with pytest.raises(IdxFormatError, match="bad magic number 0x00000d03"):
        parse_idx(bytes(payload), "images", 3)


def test_parse_idx_rejects_a_label_file_given_as_images() -> None:
    with pytest.raises(IdxFormatError, match="bad magic number"):
        parse_idx(idx_bytes(np.zeros(5)), "images", 3)


@pytest.mark.parametrize(
    ("cut", "message"),
    [(3, "truncated header"), (10, "truncated header"), (16 + 100, "truncated: header says")],
    ids=["magic", "sizes", "payload"],
)
def test_parse_idx_rejects_truncated_files(cut: int, message: str) -> None:
    with pytest.raises(IdxFormatError, match=message):
        parse_idx(idx_bytes(np.zeros((2, 28, 28)))[:cut], "images", 3)


def test_parse_idx_rejects_trailing_bytes() -> None:
    with pytest.raises(IdxFormatError, match="has trailing bytes"):
        parse_idx(idx_bytes(np.zeros(4)) + b"\x00", "labels", 1)


def test_truncated_gzip_is_a_clear_error(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(IdxFormatError, match="t10k-images-idx3-ubyte.gz: cannot read"):
        load_mnist(tmp_path, "test")


def test_image_and_label_counts_must_agree(tmp_path: Path) -> None:
    write_mnist(tmp_path, compress=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(7)))
    with pytest.raises(IdxFormatError, match="test: 20 images but 7 labels"):
        load_mnist(tmp_path, "test")


def test_images_must_be_28_by_28(tmp_path: Path) -> None:
    write_mnist(tmp_path, compress=False)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((20, 32, 32))))
    with pytest.raises(IdxFormatError, match="expected 28x28"):
        load_mnist(tmp_path, "test")


def test_labels_must_be_digits(tmp_path: Path) -> None:
    write_mnist(tmp_path, compress=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(20, 10)))
    with pytest.raises(IdxFormatError, match="label 10 is not a digit"):
        load_mnist(tmp_path, "test")


def test_missing_files_without_network_name_the_files_and_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(_: Path) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(data, "_download", offline)
    with pytest.raises(DataUnavailableError) as caught:
        load_mnist(tmp_path, "train")
    message = str(caught.value)
    assert all(stem in message for stem in ALL_FILES)
    assert "--data-dir" in message and "DIGITS_DATA_DIR" in message and "network unreachable" in message


def test_missing_files_are_downloaded_into_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "_download", write_mnist)
    images, _ = load_mnist(tmp_path / "fresh", "train")
    assert len(images) == 40


def test_default_data_dir_prefers_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITS_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path


def test_default_data_dir_falls_back_to_the_shared_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIGITS_DATA_DIR", raising=False)
    expected = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"
    assert default_data_dir() == expected


def test_stratified_split_keeps_class_proportions() -> None:
    labels = torch.cat([torch.full((600,), 0), torch.full((300,), 1), torch.full((100,), 2)])
    keep, held = stratified_split(labels, 100, seed=3)
    assert torch.bincount(labels[held]).tolist() == [60, 30, 10]
    assert sorted(torch.cat([keep, held]).tolist()) == list(range(1000))
    assert torch.equal(held, stratified_split(labels, 100, seed=3)[1])
    assert not torch.equal(held, stratified_split(labels, 100, seed=4)[1])


def test_stratified_split_rejects_impossible_sizes() -> None:
    with pytest.raises(ValueError, match="cannot hold out 10 of 10"):
        stratified_split(torch.zeros(10, dtype=torch.long), 10, seed=0)


def test_balanced_subset_equalises_classes_as_far_as_possible() -> None:
    labels = torch.cat([torch.full((50,), 0), torch.full((5,), 1), torch.full((50,), 2)])
    chosen = balanced_subset(labels, 25, seed=0)
    assert len(set(chosen.tolist())) == 25
    assert torch.bincount(labels[chosen]).tolist() == [10, 5, 10]


def test_standard_protocol_holds_out_a_stratified_validation_set() -> None:
    splits = load_splits(default_data_dir(), TrainConfig())
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (55_000, 5_000, 10_000)
    counts = torch.bincount(splits.validation.labels)
    assert counts.sum() == 5_000 and counts.min() >= 450


def test_seed_protocol_splits_the_official_test_set_7_to_3() -> None:
    splits = load_splits(default_data_dir(), TrainConfig(protocol="seed"))
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (6_300, 700, 3_000)
    official_test, _ = load_mnist(default_data_dir(), "test")
    pool = {bytes(image.numpy()) for image in official_test}
    assert all(bytes(image.numpy()) in pool for image in splits.train.images[:50])


def test_limits_subsample_class_balanced() -> None:
    splits = load_splits(default_data_dir(), TrainConfig(limit=200, eval_limit=100))
    assert torch.bincount(splits.train.labels).tolist() == [20] * 10
    assert len(splits.validation) == len(splits.test) == 100


def test_gzip_and_raw_copies_of_the_official_files_parse_identically(tmp_path: Path) -> None:
    source = default_data_dir() / "t10k-labels-idx1-ubyte.gz"
    (tmp_path / "labels").write_bytes(gzip.decompress(source.read_bytes()))
    assert data.read_raw_bytes(source) == data.read_raw_bytes(tmp_path / "labels")
    assert len(parse_idx(data.read_raw_bytes(tmp_path / "labels"), "labels", 1)) == 10_000
