"""The anytime supernet (torch side): a DAG of residual blocks whose sub-networks share weights.

Feature maps are the DAG's nodes and operations its edges. A stem convolution makes ``v_0``;
block ``i`` maps ``v_i`` to ``v_{i+1} = v_i + a_i(v_i) + b_i(v_i)``: the identity (skip) edge and
two equal branches, each an inverted bottleneck (1x1 expand, ReLU; 3x3 depthwise, ReLU; 1x1
project), through a hidden node of its own; a linear head reads ``v_L``. A sub-network (a
*path*) keeps, per block, nothing (the block is skipped: elastic depth), branch ``a`` (half
width) or both branches (full width: elastic width as parallel edges), so ``3**blocks`` paths
share one set of weights. A path is written as one digit per block, ``0`` skip, ``1`` half,
``2`` full: ``"2102"``.

Width as parallel branches rather than a slice of one layer's channels keeps every path a
sub-graph of the full network made of whole layers: the deployed Graph runs a path by leaving
nodes out, never by slicing (copying) a weight. The layers are ones every edgekit target runs
(1x1 and depthwise convolutions, adds, ReLU, linear), and there is no batch norm: its
statistics would differ per path.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from edgekit.errors import EdgekitError

SKIP, HALF, FULL = 0, 1, 2


def all_paths(blocks: int) -> list[str]:
    """Every path of a supernet with ``blocks`` blocks, smallest digits first."""
    return ["".join(map(str, p)) for p in itertools.product(range(3), repeat=blocks)]


def check_path(path: str, blocks: int) -> str:
    if len(path) != blocks or set(path) - set("012"):
        raise EdgekitError(f"path {path!r}: give one digit per block ({blocks}), each 0 (skip), "
                           "1 (half width) or 2 (full width)")
    return path


def _branch(channels: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, hidden, 1), nn.ReLU(),
        nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.ReLU(),
        nn.Conv2d(hidden, channels, 1))


class Block(nn.Module):
    """``x + a(x) + b(x)`` with branches switched off by the path's digit for this block."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.a, self.b = _branch(channels, hidden), _branch(channels, hidden)
        for branch in (self.a, self.b):  # start near the identity: every path trains at once
            nn.init.zeros_(branch[-1].bias)
            branch[-1].weight.data.mul_(0.5)

    def forward(self, x: torch.Tensor, choice: int = FULL) -> torch.Tensor:
        if choice == SKIP:
            return x
        y = x + self.a(x)
        return y + self.b(x) if choice == FULL else y


class AnytimeNet(nn.Module):
    """The supernet: ``net(x, path)`` runs one path (default: all of it).

    Defaults fit 8x8 digits: 16 channels, 4 blocks of two 32-wide branches; the full path is
    ~0.7 M MACs, the smallest (stem and head) ~20 k.
    """

    def __init__(self, blocks: int = 4, channels: int = 16, hidden: int = 32,
                 size: int = 8, in_channels: int = 1, classes: int = 10):
        super().__init__()
        self.config = {"blocks": blocks, "channels": channels, "hidden": hidden, "size": size,
                       "in_channels": in_channels, "classes": classes}
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU())
        self.blocks = nn.ModuleList(Block(channels, hidden) for _ in range(blocks))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, classes))
        self.path = "2" * blocks  # the path ``forward`` runs without one (torch.export)

    def forward(self, x: torch.Tensor, path: str | None = None) -> torch.Tensor:
        path = self.path if path is None else path
        x = self.stem(x)
        for block, choice in zip(self.blocks, path, strict=True):
            x = block(x, int(choice))
        return self.head(x)
