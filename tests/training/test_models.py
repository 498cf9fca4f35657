"""The architectures: the input/output contract, LeNet-5's topology, the standardisation layer and the ensemble."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contract import IMAGE_SIZE, NUM_CLASSES
from contract.torchscript import load_torchscript, to_torchscript
from training.models import (
    LENET_INPUT_SIZE,
    MNIST_MEAN,
    MNIST_STD,
    MODELS,
    LeNet5,
    MeanLogProbs,
    SmallCNN,
    Standardize,
)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_maps_images_to_ten_logits(name: str) -> None:
    model = MODELS[name]().eval()
    logits = model(torch.rand(3, 1, IMAGE_SIZE, IMAGE_SIZE))
    assert logits.shape == (3, NUM_CLASSES)
    assert torch.isfinite(logits).all()


def test_lenet5_has_the_1998_topology_on_a_padded_32x32_input() -> None:
    model = LeNet5().eval()
    shapes: list[tuple[int, ...]] = []
    for layer in model.modules():
        if isinstance(layer, nn.Conv2d | nn.AvgPool2d):
            layer.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
    padded: list[tuple[int, ...]] = []
    model.pad.register_forward_hook(lambda _m, _i, out: padded.append(tuple(out.shape[2:])))
    model(torch.rand(2, 1, IMAGE_SIZE, IMAGE_SIZE))
    assert padded == [(LENET_INPUT_SIZE, LENET_INPUT_SIZE)]
    assert shapes == [(6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120, 1, 1)]
    linear = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    assert linear == [84, NUM_CLASSES]


def test_small_cnn_stays_small_enough_for_cpu_serving() -> None:
    parameters = sum(p.numel() for p in SmallCNN().parameters())
    assert 50_000 <= parameters <= 300_000


def test_standardize_uses_the_mnist_statistics() -> None:
    x = torch.tensor([MNIST_MEAN, MNIST_MEAN + MNIST_STD])
    assert torch.allclose(Standardize()(x), torch.tensor([0.0, 1.0]))


def test_ensemble_averages_its_members_log_probabilities_and_scripts_as_one_module() -> None:
    torch.manual_seed(0)
    members = [SmallCNN(num_classes=3).eval(), SmallCNN(num_classes=3).eval()]
    ensemble = MeanLogProbs(members).eval()
    x = torch.rand(5, 1, IMAGE_SIZE, IMAGE_SIZE)

    with torch.inference_mode():
        expected = (torch.log_softmax(members[0](x), 1) + torch.log_softmax(members[1](x), 1)) / 2
        output = ensemble(x)
        scripted_module = load_torchscript(to_torchscript(ensemble))
        scripted = scripted_module(x)

    assert torch.allclose(output, expected)
    assert torch.allclose(scripted, expected, atol=1e-6)
    assert "prim::fork" in str(scripted_module.graph)  # the members run side by side when scripted
    # A geometric mean of distributions: each row's probabilities sum to at most 1.
    assert bool((output.exp().sum(dim=1) <= 1 + 1e-6).all())
