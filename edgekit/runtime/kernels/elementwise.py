"""Elementwise kernels on flat C-contiguous float32 arrays (reshape views before calling).

An activation, fused into conv/linear/add or standing alone as relu/relu6, is a clamp to
``[amin, amax]`` (see ``ACTIVATION_BOUNDS``): one branch-free rule every kernel applies alike.
"""

from __future__ import annotations

import numpy as np
from numba import njit

ACTIVATION_BOUNDS = {"none": (-np.inf, np.inf), "relu": (0.0, np.inf), "relu6": (0.0, 6.0)}


@njit(cache=True)
def clamp(x, amin, amax, out):
    for i in range(x.size):
        out[i] = min(max(x[i], amin), amax)


@njit(cache=True)
def leaky_relu(x, alpha, out):
    for i in range(x.size):
        v = x[i]
        out[i] = v if v >= 0 else v * alpha


@njit(cache=True)
def binary(x, y, dims, y_strides, multiply, amin, amax, out):
    """``out = act(x + y)`` or ``act(x * y)``, y broadcast to x's shape.

    ``dims`` is x's shape with neighbouring axes merged while y is either broadcast along all of
    them or along none, and ``y_strides`` is y's stride per merged axis (0 where broadcast), so
    y's offset is computed once per innermost row and the row loop is contiguous or scalar.
    """
    inner = dims[-1]
    y_step = y_strides[-1]
    for row in range(x.size // inner):
        y_off, rest = 0, row
        for d in range(dims.size - 2, -1, -1):
            y_off += rest % dims[d] * y_strides[d]
            rest //= dims[d]
        xs = x[row * inner:(row + 1) * inner]
        dst = out[row * inner:(row + 1) * inner]
        for i in range(inner):
            v = y[y_off + i * y_step]
            v = xs[i] * v if multiply else xs[i] + v
            dst[i] = min(max(v, amin), amax)


@njit(cache=True)
def softmax(x, out):
    """Softmax along axis 1 of ``(outer, n, inner)`` views: max-shifted, float64 sum."""
    for o in range(x.shape[0]):
        for i in range(x.shape[2]):
            peak = x[o, 0, i]
            for a in range(1, x.shape[1]):
                peak = max(peak, x[o, a, i])
            total = 0.0
            for a in range(x.shape[1]):
                e = np.exp(x[o, a, i] - peak)
                out[o, a, i] = e
                total += e
            inv = 1.0 / total
            for a in range(x.shape[1]):
                out[o, a, i] *= inv
