"""Small, well-formed MNIST IDX files written on the fly, for tests of the loaders and short training runs."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


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
