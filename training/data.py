"""MNIST on disk: the IDX reader (validated), the data directory setting, download, and the two split protocols.

``standard``: the official 60k/10k split with a fixed, stratified 5,000-image validation hold-out from training.
``seed``: the reference design's protocol, the 10k official test images split 7:3 (stratified, fixed seed).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from contract import IMAGE_SIZE, NUM_CLASSES
from training.config import TrainConfig

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "DIGITS_DATA_DIR"
Split = Literal["train", "test"]
FILES: dict[Split, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_FILES = [name for pair in FILES.values() for name in pair]
EXPECTED_COUNTS: dict[Split, int] = {"train": 60_000, "test": 10_000}
# IDX header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then big-endian sizes.
_IDX_UBYTE = 0x08
_IMAGE_DIMS = 3
_LABEL_DIMS = 1
# The seed protocol's 7:3 split of its 10,000 images, as in the reference design.
SEED_TEST_FRAC = 0.3


class DataError(Exception):
    """The MNIST files are missing, unreadable or inconsistent; the message says which file and why."""


class IdxFormatError(DataError):
    """A file is not a well-formed IDX file of the expected kind."""


class DataUnavailableError(DataError):
    """The files are not in the data directory and could not be downloaded."""


def default_data_dir() -> Path:
    """``$DIGITS_DATA_DIR`` if set; else the shared ``../shared/data/mnist`` beside the repository; else a cache dir."""
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    shared = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mnist"
    if shared.is_dir():
        return shared
    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache_root / "digits" / "mnist"


def _locate(data_dir: Path, stem: str) -> Path | None:
    for candidate in (data_dir / f"{stem}.gz", data_dir / stem):
        if candidate.is_file():
            return candidate
    return None


def read_raw_bytes(path: Path) -> bytes:
    """The uncompressed content of an IDX file (``.gz`` or raw)."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise IdxFormatError(f"{path.name}: cannot read ({exc})") from None


def parse_idx(data: bytes, name: str, ndim: int) -> np.ndarray:
    """Decode an unsigned-byte IDX payload of ``ndim`` dimensions, checking magic number and size."""
    if len(data) < 4:
        raise IdxFormatError(f"{name}: truncated header ({len(data)} bytes)")
    zero, type_code, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code != _IDX_UBYTE or dims != ndim:
        raise IdxFormatError(f"{name}: bad magic number 0x{data[:4].hex()} (expected 0x0000{_IDX_UBYTE:02x}{ndim:02x})")
    header_bytes = 4 + 4 * ndim
    if len(data) < header_bytes:
        raise IdxFormatError(f"{name}: truncated header ({len(data)} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4:header_bytes])
    expected = int(np.prod(shape, dtype=np.int64))
    payload = len(data) - header_bytes
    if payload != expected:
        kind = "truncated" if payload < expected else "has trailing bytes"
        raise IdxFormatError(f"{name}: {kind}: header says {shape} = {expected} bytes, found {payload}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_bytes).reshape(shape)


def _download(data_dir: Path) -> None:
    """Fetch the four files from torchvision's public mirrors into ``data_dir``."""
    from torchvision.datasets import MNIST

    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        for train in (True, False):
            MNIST(root=tmp, train=train, download=True)
        raw = Path(tmp) / "MNIST" / "raw"
        for stem in ALL_FILES:
            source = raw / f"{stem}.gz"
            if not source.is_file():
                source = raw / stem
            shutil.move(source, data_dir / source.name)


def ensure_files(data_dir: Path) -> dict[str, Path]:
    """Paths of the four IDX files, downloading them first when any is absent."""
    found = {stem: _locate(data_dir, stem) for stem in ALL_FILES}
    if any(path is None for path in found.values()):
        logger.info("MNIST files not found in %s; downloading", data_dir)
        try:
            _download(data_dir)
        except Exception as exc:
            raise DataUnavailableError(
                f"MNIST is not in {data_dir} and the download failed ({exc}). Put the four files "
                f"{', '.join(ALL_FILES)} (optionally .gz) there, or point --data-dir / {DATA_DIR_ENV} at them."
            ) from None
        found = {stem: _locate(data_dir, stem) for stem in ALL_FILES}
    missing = [stem for stem, path in found.items() if path is None]
    if missing:
        raise DataUnavailableError(f"{data_dir} lacks {', '.join(missing)}; set --data-dir / {DATA_DIR_ENV}")
    return {stem: path for stem, path in found.items() if path is not None}


def load_mnist(data_dir: Path, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """One official split: uint8 images ``(N, 28, 28)`` and int64 labels ``(N,)``, validated."""
    paths = ensure_files(data_dir)
    image_stem, label_stem = FILES[split]
    images = parse_idx(read_raw_bytes(paths[image_stem]), paths[image_stem].name, _IMAGE_DIMS)
    labels = parse_idx(read_raw_bytes(paths[label_stem]), paths[label_stem].name, _LABEL_DIMS)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise IdxFormatError(f"{paths[image_stem].name}: images are {images.shape[1:]}, expected 28x28")
    if len(images) != len(labels):
        raise IdxFormatError(f"{split}: {len(images)} images but {len(labels)} labels")
    if len(images) != EXPECTED_COUNTS[split]:
        logger.warning("%s split has %d images (official MNIST has %d)", split, len(images), EXPECTED_COUNTS[split])
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise IdxFormatError(f"{paths[label_stem].name}: label {int(labels.max())} is not a digit")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def data_checksums(data_dir: Path) -> dict[str, str]:
    """sha256 of each file's uncompressed bytes, so ``.gz`` and raw copies of the same data agree."""
    paths = ensure_files(data_dir)
    return {stem: hashlib.sha256(read_raw_bytes(paths[stem])).hexdigest() for stem in ALL_FILES}


def stratified_split(labels: torch.Tensor, holdout: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(keep, held_out)`` with ``holdout`` items drawn in proportion to each class (largest remainder)."""
    if not 0 < holdout < len(labels):
        raise ValueError(f"cannot hold out {holdout} of {len(labels)} items")
    generator = torch.Generator().manual_seed(seed)
    counts = torch.bincount(labels, minlength=NUM_CLASSES).double()
    exact = counts * holdout / len(labels)
    quota = exact.floor().long()
    leftover = holdout - int(quota.sum())
    quota[torch.argsort(exact - quota, descending=True, stable=True)[:leftover]] += 1
    kept, held = [], []
    for digit in range(NUM_CLASSES):
        members = torch.nonzero(labels == digit).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        held.append(members[: int(quota[digit])])
        kept.append(members[int(quota[digit]) :])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values


def balanced_subset(labels: torch.Tensor, limit: int, seed: int) -> torch.Tensor:
    """Indices of at most ``limit`` items with the classes as equal in number as the data allows."""
    if limit >= len(labels):
        return torch.arange(len(labels))
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    # Rank each item within its class in random order, then take items round-robin across classes by rank.
    shuffled = labels[order]
    rank = torch.empty_like(order)
    for digit in range(NUM_CLASSES):
        members = torch.nonzero(shuffled == digit).flatten()
        rank[members] = torch.arange(len(members))
    chosen = order[torch.argsort(rank * NUM_CLASSES + shuffled, stable=True)[:limit]]
    return chosen.sort().values


@dataclass(frozen=True)
class Subset:
    """Images (uint8, ``(N, 28, 28)``) with their labels (int64, ``(N,)``)."""

    images: torch.Tensor
    labels: torch.Tensor

    def take(self, indices: torch.Tensor) -> Subset:
        return Subset(self.images[indices], self.labels[indices])

    def limited(self, limit: int | None, seed: int) -> Subset:
        return self if limit is None else self.take(balanced_subset(self.labels, limit, seed))

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Splits:
    """Train, validation (model selection and calibration) and test sets of one protocol."""

    train: Subset
    validation: Subset
    test: Subset


def load_splits(data_dir: Path, config: TrainConfig) -> Splits:
    """The protocol's three sets; ``limit`` and ``eval_limit`` subsample them class-balanced."""
    test = Subset(*load_mnist(data_dir, "test"))
    if config.protocol == "standard":
        pool = Subset(*load_mnist(data_dir, "train"))
        keep, held = stratified_split(pool.labels, config.validation_size, config.seed)
        train, validation = pool.take(keep), pool.take(held)
    else:
        keep, held = stratified_split(test.labels, round(len(test) * SEED_TEST_FRAC), config.seed)
        pool, test = test.take(keep), test.take(held)
        keep, held = stratified_split(pool.labels, round(len(pool) * config.seed_validation_frac), config.seed)
        train, validation = pool.take(keep), pool.take(held)
    return Splits(
        train=train.limited(config.limit, config.seed),
        validation=validation.limited(config.eval_limit, config.seed),
        test=test.limited(config.eval_limit, config.seed),
    )
