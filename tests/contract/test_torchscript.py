"""contract.torchscript: the one TorchScript seam round-trips a network, optimises it, and keeps the deprecation
warning to itself (the suite turns warnings into errors)."""

from __future__ import annotations

import torch
from torch import nn

from contract.torchscript import load_torchscript, optimize_for_inference, to_torchscript


def _network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))


def test_bytes_load_back_to_the_same_logits() -> None:
    net = _network().eval()
    images = torch.rand(8, 1, 28, 28)
    with torch.inference_mode():
        assert torch.allclose(load_torchscript(to_torchscript(net))(images), net(images), atol=1e-6)


def test_scripting_leaves_the_training_network_untouched() -> None:
    net = _network().train()
    to_torchscript(net)
    assert net.training


def test_optimised_graph_gives_the_same_logits() -> None:
    module = load_torchscript(to_torchscript(_network()))
    images = torch.rand(4, 1, 28, 28)
    with torch.inference_mode():
        assert torch.allclose(optimize_for_inference(module)(images), module(images), atol=1e-4)
