"""Training an anytime supernet (torch side): every step trains a few sampled paths of the
shared weights (``tips.PathSampler``), or one fixed path for an independently trained
baseline."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgekit.anytime.supernet import AnytimeNet
from edgekit.anytime.tips import PathSampler
from edgekit.errors import EdgekitError

SAMPLING = ("tips", "uniform")


def train_supernet(x: np.ndarray, y: np.ndarray, sampling: str = "tips", epochs: int = 30,
                   seed: int = 0, paths_per_step: int = 2, sandwich: bool = False,
                   fixed_path: str | None = None, lr: float = 3e-3, batch_size: int = 64,
                   net: AnytimeNet | None = None) -> AnytimeNet:
    """Adam on the summed cross-entropy of the step's paths, cosine schedule, deterministic
    for a seed; ``fixed_path`` trains that one path only. Returns the net in eval mode."""
    if sampling not in SAMPLING:
        raise EdgekitError(f"sampling {sampling!r}: use one of {', '.join(SAMPLING)}")
    if epochs < 1:
        raise EdgekitError(f"epochs must be at least 1, got {epochs}")
    torch.manual_seed(seed)
    if net is None:
        net = AnytimeNet(size=x.shape[-1], in_channels=x.shape[1], classes=int(y.max()) + 1)
    sampler = PathSampler(len(net.blocks), sampling, sandwich, seed)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * -(-len(yt) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(yt), generator=gen).split(batch_size):
            opt.zero_grad()
            paths = [fixed_path] if fixed_path else sampler.draw(paths_per_step)
            loss = sum(nn.functional.cross_entropy(net(xt[idx], p), yt[idx]) for p in paths)
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()
