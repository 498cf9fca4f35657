"""contract.device: the same choice of device for the trainer and the service."""

import pytest
import torch

from contract.device import DeviceUnavailableError, select_device

CPU = torch.device("cpu")


def test_cpu_is_the_cpu_and_auto_is_the_cpu_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    assert select_device("cpu") == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == CPU


def test_auto_is_cuda_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto") == torch.device("cuda")


def test_cuda_without_a_gpu_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceUnavailableError, match="no CUDA device"):
        select_device("cuda")
