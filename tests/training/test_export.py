"""TorchScript export: the scripted graph takes [0, 1] pixels, reloads, and must match eager within tolerance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from contract.torchscript import to_torchscript
from training.export import ExportMismatchError, check_export, git_commit
from training.train import build_network


def test_exported_model_reproduces_the_eager_logits() -> None:
    torch.manual_seed(0)
    net = build_network("lenet5").eval()
    images = torch.rand(16, 1, 28, 28)
    scripted = to_torchscript(net)
    assert check_export(net, scripted, images) <= 1e-4


def test_a_scripted_model_that_differs_is_refused() -> None:
    torch.manual_seed(0)
    net = build_network("mlp")
    other = to_torchscript(build_network("mlp"))
    with pytest.raises(ExportMismatchError, match="differ from eager"):
        check_export(net, other, torch.rand(8, 1, 28, 28))


def test_git_commit_outside_a_repository_is_none(tmp_path: Path) -> None:
    assert git_commit(tmp_path) is None


def test_git_commit_of_this_checkout_is_a_sha() -> None:
    commit = git_commit(Path(__file__).resolve().parents[2])
    assert commit is not None and len(commit.removesuffix("-dirty")) == 40
