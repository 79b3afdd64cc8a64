"""A batch-norm twin for training on a device: running-statistics standardisation.

Graphs arrive with batch norm folded into their convs, so a block's output scale is whatever
its weights make it. Local losses (LLS's L2-normalised scores, for one) are blind to that
scale, so trained from scratch the features a classifier reads can shrink until it learns
slowly. ``Norm`` restores what BN gave: the pre-activation becomes
``gamma * (z - mean) / sqrt(var + eps) + beta`` with ``mean``/``var`` running averages and
``gamma``/``beta`` trained. Unlike BN, no batch statistic enters the forward pass (the moments
of each batch update the averages only after the step), so a batch of one behaves like a batch
of 128 and the gradient treats the statistics as constants. The whole map is per-channel
affine, so it folds into the weights: the blocks' kernels run the folded weights, and the
exported Graph carries them with no extra op.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Norm:
    channels: int
    momentum: float = 0.1
    eps: float = 1e-5
    mean: np.ndarray = field(init=False)
    var: np.ndarray = field(init=False)
    gamma: np.ndarray = field(init=False)
    beta: np.ndarray = field(init=False)
    sums: np.ndarray = field(init=False)  # this step's moments of the folded pre-activations
    count: int = 0

    def __post_init__(self) -> None:
        self.mean = np.zeros(self.channels, np.float32)
        self.var = np.ones(self.channels, np.float32)
        self.gamma = np.ones(self.channels, np.float32)
        self.beta = np.zeros(self.channels, np.float32)
        self.sums = np.zeros((2, self.channels))

    def scale(self) -> np.ndarray:
        return self.gamma / np.sqrt(self.var + self.eps)


def fold(weight: np.ndarray, bias: np.ndarray, norm: Norm) -> tuple[np.ndarray, np.ndarray]:
    """The weight and bias that compute normalised pre-activations directly."""
    s = norm.scale()
    w = (weight * s.reshape(-1, *[1] * (weight.ndim - 1))).astype(np.float32)
    return w, ((bias - norm.mean) * s + norm.beta).astype(np.float32)


def chain_grads(weight: np.ndarray, bias: np.ndarray, norm: Norm, dw: np.ndarray,
                db: np.ndarray, dgamma: np.ndarray, dbeta: np.ndarray) -> None:
    """Turn gradients w.r.t. the folded weight and bias (in ``dw``, ``db``, in place) into
    gradients w.r.t. the weight, bias, gamma and beta."""
    inv = 1.0 / np.sqrt(norm.var + norm.eps)
    s = norm.gamma * inv
    dgamma[...] = ((dw * weight).reshape(len(s), -1).sum(1) + db * (bias - norm.mean)) * inv
    dbeta[...] = db
    dw *= s.reshape(-1, *[1] * (dw.ndim - 1))
    db *= s


def update(norm: Norm) -> None:
    """Fold this step's moments into the running mean and variance, then clear them.

    The variance is taken around the running mean, so a single sample updates it sensibly."""
    if not norm.count:
        return
    s = norm.scale()
    m1, m2 = norm.sums / norm.count
    batch_mean = norm.mean + (m1 - norm.beta) / s
    spread = (m2 - 2 * norm.beta * m1 + norm.beta ** 2) / s ** 2  # E[(z - mean)^2]
    norm.var[...] = (1 - norm.momentum) * norm.var + norm.momentum * spread
    norm.mean[...] = (1 - norm.momentum) * norm.mean + norm.momentum * batch_mean
    norm.sums[...] = 0.0
    norm.count = 0
