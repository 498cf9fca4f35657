"""Which torch device to run on, decided the same way by the trainer and the service."""

from __future__ import annotations

from typing import Literal

import torch

DeviceChoice = Literal["auto", "cpu", "cuda"]


class DeviceUnavailableError(RuntimeError):
    """``cuda`` was asked for explicitly and no CUDA device is visible."""


def select_device(choice: DeviceChoice) -> torch.device:
    """``auto`` is CUDA when present, else the CPU; ``cuda`` without a GPU raises :class:`DeviceUnavailableError`."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError("CUDA was requested but no CUDA device is available")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)
