"""Reference models shared by the demo, examples, tests and benchmarks (torch side).

Small enough to train on the bundled digits in seconds on a CPU, and built only from layers
every edgekit target supports, so each can go the whole way to a microcontroller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn


def digits_cnn(size: int = 16, classes: int = 10, pool: str = "max") -> nn.Module:
    """Two conv-BN-ReLU-pool blocks and a linear classifier (~0.1 M MACs at 16x16).

    ``pool="avg"`` trains the network an SNN conversion needs: spiking layers average-pool.
    """
    pooling = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}[pool]
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), pooling(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), pooling(2),
        nn.Flatten(), nn.Dropout(0.1), nn.Linear(16 * (size // 4) ** 2, classes),
    )


def mlp(in_features: int = 64, hidden: tuple[int, ...] = (128, 64), classes: int = 10) -> nn.Module:
    """Flatten then linear-ReLU layers; takes the images as they are (NCHW)."""
    layers: list[nn.Module] = [nn.Flatten()]
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        in_features = width
    return nn.Sequential(*layers, nn.Linear(in_features, classes))


class _SeparableResidual(nn.Module):
    """Depthwise 3x3 + pointwise 1x1, each with BN, ReLU6 after, and a skip connection."""

    def __init__(self, channels: int):
        super().__init__()
        self.depthwise = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU6())
        self.pointwise = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.relu = nn.ReLU()  # a module, not torch.relu, so converters.qcfs can swap it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.pointwise(self.depthwise(x)))


def ds_cnn(size: int = 16, classes: int = 10, channels: int = 16) -> nn.Module:
    """Depthwise-separable CNN with residual adds (MobileNet-style, keyword-spotting sized)."""
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(channels),
        nn.ReLU6(),
        _SeparableResidual(channels), _SeparableResidual(channels),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes),
    )


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 15, lr: float = 3e-3,
          batch_size: int = 64, seed: int = 0,
          progress: Callable[[Iterable[int]], Iterable[int]] = iter) -> nn.Module:
    """Adam on cross-entropy, deterministic for a seed; returns the model in eval mode.

    ``progress`` wraps the epoch loop (e.g. ``edgekit.console.progress``) to show a bar.
    """
    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in progress(range(epochs)):
        for idx in torch.randperm(len(yt), generator=gen).split(batch_size):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Logits as numpy, for comparing torch with edgekit's runtimes on the same inputs."""
    return model.eval()(torch.from_numpy(x)).numpy()


from edgekit.anytime.supernet import AnytimeNet  # noqa: E402,F401  (the anytime supernet)
from edgekit.speech.model import EarlyExitCTC  # noqa: E402,F401  (the early-exit ASR encoder)
