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


# The op code ``binary`` takes (``edgekit.ops.elementwise`` names its ops so).
BINARY = {"add": 0, "mul": 1, "sub": 2, "div": 3, "maximum": 4, "minimum": 5}


@njit(cache=True, inline="always")
def offsets(row, dims, x_strides, y_strides):
    """Offsets into x and y of innermost row ``row`` of the output (see ``binary``)."""
    x_off, y_off = 0, 0
    for d in range(dims.size - 2, -1, -1):
        i = row % dims[d]
        x_off += i * x_strides[d]
        y_off += i * y_strides[d]
        row //= dims[d]
    return x_off, y_off


@njit(cache=True, inline="always")
def broadcast_rows(x, y, dims, x_strides, y_strides, out, f, args):
    """``out[j] = f(a, b, args)`` with ``a``, ``b`` x's and y's elements at output ``j``: the
    broadcast walk every binary kernel (float and int8) shares. ``f`` is an njit function, which
    numba specialises this walk for (a direct, inlined call, not one through a pointer per
    element), ``args`` the tuple of its other parameters. Rows of the output are contiguous
    slices and the operands are read through unsigned offsets, so no index check stops
    vectorization (the layout: ``binary``)."""
    inner, x_step, y_step = dims[-1], x_strides[-1], y_strides[-1]
    for row in range(out.size // inner):
        x_off, y_off = offsets(row, dims, x_strides, y_strides)
        dst = out[row * inner:(row + 1) * inner]
        for i in range(inner):
            dst[i] = f(x[np.uint64(x_off + i * x_step)], y[np.uint64(y_off + i * y_step)], args)


@njit(cache=True, inline="always", error_model="numpy")
def _binary_one(a, b, args):
    op, amin, amax = args
    if op == 0:
        v = a + b
    elif op == 1:
        v = a * b
    elif op == 2:
        v = a - b
    elif op == 3:
        v = a / b
    elif op == 4:
        v = max(a, b)
    else:
        v = min(a, b)
    return min(max(v, amin), amax)


@njit(cache=True, error_model="numpy")
def binary(x, y, dims, x_strides, y_strides, op, amin, amax, out):
    """``out = act(x op y)`` (``op`` a ``BINARY`` code), x and y broadcast to out's shape as
    numpy does (``edgekit.ops.elementwise.broadcast_layout``).

    ``dims`` is the output's shape with neighbouring axes merged while each operand is either
    broadcast along all of them or along none, and ``x_strides``/``y_strides`` are each
    operand's stride per merged axis (0 where broadcast), so the offsets are computed once per
    innermost row and the row loop reads contiguous or scalar operands. Division by zero gives
    inf or NaN, as numpy's (``error_model``), not an exception.
    """
    broadcast_rows(x, y, dims, x_strides, y_strides, out, _binary_one, (op, amin, amax))


@njit(cache=True, inline="always")
def _prelu_one(v, a, args):
    return v if v >= 0 else v * a


@njit(cache=True)
def prelu(x, alpha, dims, x_strides, a_strides, out):
    """``out = x if x >= 0 else alpha * x``, alpha broadcast to x as in ``binary``."""
    broadcast_rows(x, alpha, dims, x_strides, a_strides, out, _prelu_one, ())


@njit(cache=True, inline="always")
def row_max(x, o, i):
    """The largest of ``x[o, :, i]``: the shift softmax and log_softmax subtract."""
    peak = x[o, 0, i]
    for a in range(1, x.shape[1]):
        peak = max(peak, x[o, a, i])
    return peak


@njit(cache=True)
def softmax(x, out):
    """Softmax along axis 1 of ``(outer, n, inner)`` views: max-shifted, float64 sum."""
    for o in range(x.shape[0]):
        for i in range(x.shape[2]):
            peak = row_max(x, o, i)
            total = 0.0
            for a in range(x.shape[1]):
                e = np.exp(x[o, a, i] - peak)
                out[o, a, i] = e
                total += e
            inv = 1.0 / total
            for a in range(x.shape[1]):
                out[o, a, i] *= inv
