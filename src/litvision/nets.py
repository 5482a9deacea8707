"""The tutorials' networks. Each takes the input shape and class count from the data, so one config
serves MNIST (1x28x28) and CIFAR-10 (3x32x32) alike."""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from litvision import UserError


class LeNet(nn.Module):
    """The CIFAR-10 tutorial's CNN: conv 6 and 16 (5x5), each followed by ReLU and 2x2 max-pool, then
    fully connected 120-84-classes. Layer names match the tutorial's, so its state dicts load."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.dropout = nn.Dropout(_rate(dropout))  # on the input, as the Cogitare recipe does; no parameters
        self.conv1 = nn.Conv2d(channels, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        # Each 5x5 conv loses 4 pixels, each pool halves: 32 -> 5, 28 -> 4.
        h, w = ((height - 4) // 2 - 4) // 2, ((width - 4) // 2 - 4) // 2
        if h < 1 or w < 1:
            raise ValueError(f"LeNet needs images of at least 16x16 pixels, got {height}x{width}")
        self.fc1 = nn.Linear(16 * h * w, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(self.dropout(x))))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class MLP(nn.Module):
    """The MNIST notebook's fully connected network (784-120-256-10 by default): flatten, then Linear
    layers with ReLU between them."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (120, 256),
                 dropout: float = 0.0) -> None:
        super().__init__()
        sizes = [math.prod(input_shape), *hidden]
        self.dropout = nn.Dropout(_rate(dropout))  # on the input pixels, as the Cogitare recipe does
        layers: list[nn.Module] = [nn.Flatten()]
        for n_in, n_out in zip(sizes, sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.dropout(x))


class ConvNet(nn.Module):
    """A small modern CNN: blocks of 3x3 conv, BatchNorm, ReLU and 2x2 max-pool (channel widths configurable),
    then a hidden fully connected layer. Much more accurate than LeNet for a few times its compute."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (16, 32),
                 hidden: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, h, w = input_shape
        for out in channels:
            layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c, h, w = out, h // 2, w // 2
        layers += [nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                   nn.Linear(hidden, num_classes)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class AirNet(nn.Module):
    """A fast CIFAR-10 network after Keller Jordan's airbench: a 2x2-patch convolution stem, then per width a group
    of [3x3 conv, 2x2 max-pool, BatchNorm, GELU, 3x3 conv, BatchNorm, GELU] without residuals, a global max-pool
    and a bias-free linear head whose logits are scaled down (logit_scale) for a calmer start. widths=(64, 256,
    256): about 0.24 GFLOPs an image; (32, 128, 128) a quarter of it.

    airbench's initialization, each a switch: whiten sets the stem's weights from the training data (fit_to_data:
    the eigenvectors of its 2x2 patches' covariance, each scaled to unit variance, and their negatives) and freezes
    them, so the first layer sees decorrelated pixels from the first step; dirac starts each conv as the identity on
    its input channels; bn_weight=False fixes BatchNorm's scale at 1 (only its bias trains); bn_momentum is
    torch's (airbench: 0.4)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, widths: Sequence[int] = (64, 256, 256),
                 stem: int = 24, logit_scale: float = 1 / 9, whiten: bool = False, dirac: bool = False,
                 bn_weight: bool = True, bn_momentum: float = 0.1) -> None:
        super().__init__()
        c = input_shape[0]
        if whiten and stem != 2 * c * 4:
            raise UserError(f"model.stem={stem} cannot hold a whitening of {c}-channel 2x2 patches: with "
                            f"model.whiten=true use model.stem={2 * c * 4}")
        layers: list[nn.Module] = [nn.Conv2d(c, stem, 2), nn.GELU()]
        c = stem
        for width in widths:
            convs = [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.Conv2d(width, width, 3, padding=1, bias=False)]
            norms = [nn.BatchNorm2d(width, momentum=bn_momentum) for _ in convs]
            for conv, norm in zip(convs, norms):
                if dirac:
                    nn.init.dirac_(conv.weight[:conv.in_channels])
                norm.weight.requires_grad = bn_weight
            layers += [convs[0], nn.MaxPool2d(2), norms[0], nn.GELU(), convs[1], norms[1], nn.GELU()]
            c = width
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(c, num_classes, bias=False)]
        self.layers = nn.Sequential(*layers)
        self.logit_scale, self.whiten = logit_scale, whiten
        self.layers[0].weight.requires_grad = not whiten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x) * self.logit_scale

    @torch.no_grad()
    def fit_to_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """With whiten: the stem becomes a whitening of `images`' 2x2 patches (normalized training images)."""
        if not self.whiten:
            return
        stem = self.layers[0]
        c, h, w = stem.weight.shape[1:]
        patches = images.float().unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c * h * w)
        eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
        filters = (eigenvectors.T / (eigenvalues + eps).sqrt()[:, None]).reshape(-1, c, h, w)
        stem.weight.copy_(torch.cat([filters, -filters]))


def _rate(dropout: float) -> float:
    if not 0 <= dropout < 1:
        raise UserError(f"model.dropout={dropout} is invalid: a rate in [0, 1), e.g. model.dropout=0.3")
    return dropout
