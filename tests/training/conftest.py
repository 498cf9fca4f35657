"""Shared pieces of the training tests: small IDX files written on the fly, and a CPU thread cap."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX encoding of ``array``."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder: Path, train: int = 40, test: int = 20, compress: bool = True) -> None:
    """A tiny but well-formed MNIST in ``folder``: random images, labels cycling through the ten digits."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", test)):
        arrays = {
            f"{prefix}-images-idx3-ubyte": rng.integers(0, 256, size=(count, 28, 28)),
            f"{prefix}-labels-idx1-ubyte": np.arange(count) % 10,
        }
        for stem, array in arrays.items():
            data = idx_bytes(array)
            if compress:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / stem).write_bytes(data)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # The machine's cores are shared: keep each test's torch work on one thread.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
