"""Normalization kernels; statistics are taken in float64 (two passes) so long rows stay exact."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def layernorm(x, gamma, beta, eps, out):
    """Normalize each row of the ``(rows, features)`` view ``x``; gamma/beta are ``(features,)``."""
    n = x.shape[1]
    for r in range(x.shape[0]):
        mean = 0.0
        for i in range(n):
            mean += x[r, i]
        mean /= n
        var = 0.0
        for i in range(n):
            d = x[r, i] - mean
            var += d * d
        inv = 1.0 / np.sqrt(var / n + eps)
        for i in range(n):
            out[r, i] = (x[r, i] - mean) * inv * gamma[i] + beta[i]
