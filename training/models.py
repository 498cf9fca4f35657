"""The network definitions (``nn.Module`` only): MLP, LeNet-5, a small CNN, the line reader, an ensemble of
networks as one, and the input standardisation layer.

Every network takes standardised ``(N, 1, 28, 28)`` images and returns ``(N, 10)`` logits; :class:`Standardize`
puts the MNIST mean/std inside the graph so the exported model takes raw ``[0, 1]`` pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from contract import IMAGE_SIZE, NUM_CLASSES

# Mean and standard deviation of the MNIST training pixels in [0, 1] (the values torchvision's examples use).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

_PIXELS = IMAGE_SIZE * IMAGE_SIZE
# LeNet-5 was designed for 32x32 inputs: MNIST's 28x28 digits padded by 2 so strokes reach the C1 receptive fields.
LENET_INPUT_SIZE = 32
_LENET_PAD = (LENET_INPUT_SIZE - IMAGE_SIZE) // 2
_LENET_KERNEL = 5


class Standardize(nn.Module):
    """Maps ``[0, 1]`` pixels to zero mean and unit variance with the constants frozen into the graph."""

    def __init__(self, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> None:
        super().__init__()
        self.mean = mean
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class MLP(nn.Module):
    """Fully connected: two hidden layers with batch norm, ReLU and dropout."""

    HIDDEN = (1024, 512)
    DROPOUT = 0.2

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = _PIXELS
        for hidden in self.HIDDEN:
            layers += [
                nn.Linear(width, hidden, bias=False),
                nn.BatchNorm1d(hidden),
                nn.ReLU(),
                nn.Dropout(self.DROPOUT),
            ]
            width = hidden
        layers.append(nn.Linear(width, NUM_CLASSES))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(x)  # (N, 1, 28, 28) -> (N, 784) -> (N, 10)
        return logits


class LeNet5(nn.Module):
    """LeCun et al. (1998): C1 6@5x5, S2 avg pool, C3 16@5x5, S4 avg pool, C5 120, F6 84, output 10.

    Batch norm after each convolution and dropout before the classifier, as the reference design used them;
    ReLU replaces the original scaled tanh because it trains faster with batch norm.
    """

    DROPOUT = 0.25

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        s4_size = ((LENET_INPUT_SIZE - _LENET_KERNEL + 1) // 2 - _LENET_KERNEL + 1) // 2
        self.pad = nn.ZeroPad2d(_LENET_PAD)
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, _LENET_KERNEL, bias=False),  # C1
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.AvgPool2d(2),  # S2
            nn.Conv2d(6, 16, _LENET_KERNEL, bias=False),  # C3
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AvgPool2d(2),  # S4
            nn.Conv2d(16, 120, s4_size, bias=False),  # C5: a 5x5 convolution over the 5x5 maps, i.e. fully connected
            nn.BatchNorm2d(120),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(120, 84),  # F6
            nn.ReLU(),
            nn.Dropout(self.DROPOUT),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pad(x)  # (N, 1, 32, 32)
        x = self.features(x)  # (N, 6, 28, 28) -> (N, 6, 14, 14) -> (N, 16, 10, 10) -> (N, 16, 5, 5) -> (N, 120, 1, 1)
        logits: torch.Tensor = self.classifier(x)  # (N, 120) -> (N, 84) -> (N, num_classes)
        return logits


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU()]


class SmallCNN(nn.Module):
    """Three stages of 3x3 conv + batch norm + ReLU (28 -> 14 -> 7), global average pooling, one linear layer.

    About 131 k parameters. The first stage has a single narrow convolution because full-resolution layers
    dominate the CPU cost; the width goes into the 14x14 and 7x7 stages instead.
    """

    WIDTHS = (32, 64, 128)
    DROPOUT = 0.1

    def __init__(self, num_classes: int = NUM_CLASSES, widths: tuple[int, int, int] = WIDTHS) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.features = nn.Sequential(
            *_conv_bn_relu(1, c1),
            nn.MaxPool2d(2),
            *_conv_bn_relu(c1, c2),
            *_conv_bn_relu(c2, c2),
            nn.MaxPool2d(2),
            *_conv_bn_relu(c2, c3),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(self.DROPOUT), nn.Linear(c3, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, 32, 14, 14) -> (N, 64, 7, 7) -> (N, 128, 7, 7) -> (N, 128, 1, 1)
        logits: torch.Tensor = self.classifier(x)  # (N, 128) -> (N, 10)
        return logits


MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "lenet5": LeNet5, "cnn": SmallCNN}


class LineReader(nn.Module):
    """A small CRNN (Shi, Bai and Yao 2015): convolutions turn a strip of digits into one feature vector per
    ``frame_pixels`` columns, a bidirectional LSTM reads the sequence, and a linear layer gives per-frame CTC logits.

    Input ``(N, 1, 32, W)`` in [0, 1] (light ink on black, W a multiple of 4); output ``(N, W / frame_pixels, 11)``
    logits over the CTC blank and the ten digits. At 4 columns a frame a digit of the strip spans about 5 frames,
    and a "1" squeezed between overlapping neighbours one or two; 2 columns doubles that for about 1.3 times the
    training step. Widths are kept low because every column of every line pays for them; ``widths`` (the four
    stages' channels) and ``hidden`` (LSTM units per direction) size a larger reader for a GPU.
    """

    WIDTHS = (24, 48, 96, 128)
    HIDDEN = 96
    DROPOUT = 0.2

    def __init__(self, frame_pixels: int = 4, widths: tuple[int, int, int, int] = WIDTHS, hidden: int = HIDDEN) -> None:
        super().__init__()
        if frame_pixels not in (2, 4):
            raise ValueError("frame_pixels must be 2 or 4")
        self.frame_pixels = frame_pixels
        c1, c2, c3, c4 = widths
        self.features = nn.Sequential(
            *_conv_bn_relu(1, c1),
            nn.MaxPool2d(2),
            *_conv_bn_relu(c1, c2),
            nn.MaxPool2d((2, frame_pixels // 2)),
            *_conv_bn_relu(c2, c3),
            nn.MaxPool2d((2, 1)),
            *_conv_bn_relu(c3, c4),
            nn.MaxPool2d((4, 1)),
        )
        self.dropout = nn.Dropout(self.DROPOUT)
        self.rnn = nn.LSTM(c4, hidden, batch_first=True, bidirectional=True)
        self.classifier = nn.Linear(2 * hidden, NUM_CLASSES + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(
            x
        )  # (N, 1, 32, W) -> (N, 24, 16, W/2) -> (N, 48, 8, W/f) -> (N, 96, 4, W/f) -> (N, 128, 1, W/f)
        x = self.dropout(x.squeeze(2).transpose(1, 2))  # (N, W/f, 128)
        x, _ = self.rnn(x)  # (N, W/f, 2 * hidden)
        logits: torch.Tensor = self.classifier(x)  # (N, W/f, 11)
        return logits


class MeanLogProbs(nn.Module):
    """A deep ensemble (Lakshminarayanan et al. 2017) as one network: the members' log-softmax outputs, averaged.

    The output is a log-probability (a valid logit for a temperature applied after it). Members trained from
    different seeds disagree most on inputs unlike their training data, which is what an out-of-distribution
    score needs; averaging them is exported and served as a single module.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # type: ignore[attr-defined]
            # Scripted, the members run side by side on the inter-op threads.
            futures = [torch.jit.fork(member, x) for member in self.members]  # type: ignore[no-untyped-call]
            outputs = [torch.jit.wait(future) for future in futures]  # type: ignore[no-untyped-call]
        else:
            outputs = [member(x) for member in self.members]
        return torch.stack([torch.log_softmax(output, dim=1) for output in outputs]).mean(dim=0)
