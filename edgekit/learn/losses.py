"""The classifier's loss, shared by every rule: each trains its last layer on cross-entropy."""

from __future__ import annotations

import numpy as np

from edgekit.learn import kernels as K


def cross_entropy(logits: np.ndarray, labels: np.ndarray,
                  scale: float = 1.0) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of ``logits * scale`` and its gradient w.r.t. ``logits``."""
    logits = np.ascontiguousarray(logits, np.float32)
    grad = np.empty_like(logits)
    return float(K.softmax_xent(logits, labels, scale, grad)), grad
