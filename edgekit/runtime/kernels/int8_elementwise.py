"""int8 elementwise kernels on flat C-contiguous arrays, each TFLite's reference arithmetic.

Multipliers and shifts arrive precomputed (``edgekit.numerics.params``); ``add`` and ``mul`` take
the second operand broadcast as ``elementwise.binary`` does (``dims``/``y_strides``). Also the
conversions the float-inside kernels (softmax, layernorm) use at their edges, which round as
``edgekit.quant.edge`` does. numba's cache does not see edits to ``edgekit.numerics.arith``: clear
it after changing that file.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from edgekit.numerics.arith import clamp, multiply_by_quantized_multiplier, requantize
from edgekit.numerics.params import ADD_LEFT_SHIFT


@njit(cache=True)
def subtract(x, zero_point, out):
    """``out = x - zero_point`` (int8 in, int16 out): real values up to the scale, so padding
    with 0 afterwards pads with the real value 0."""
    for i in range(x.size):
        out[i] = x[i] - zero_point


@njit(cache=True, inline="always")
def _y_offset(row, dims, y_strides):
    """Offset into y of innermost row ``row`` of x (see ``elementwise.binary``)."""
    offset = 0
    for d in range(dims.size - 2, -1, -1):
        offset += row % dims[d] * y_strides[d]
        row //= dims[d]
    return offset


@njit(cache=True)
def add(x, y, dims, y_strides, zx, zy, zo, m, shift, lo, hi, out):
    """TFLite int8 ADD: each operand ``(v - z) << 20`` rescaled by its multiplier (``m[0]``,
    ``m[1]``), the sum by ``m[2]``, plus ``zo``, clamped to ``[lo, hi]``. Rows are contiguous
    slices and y is read through unsigned offsets, so no index check stops vectorization."""
    inner, y_step = dims[-1], y_strides[-1]
    m0, m1, m2, s0, s1, s2 = m[0], m[1], m[2], shift[0], shift[1], shift[2]
    for row in range(x.size // inner):
        y_off = _y_offset(row, dims, y_strides)
        xs, dst = x[row * inner:(row + 1) * inner], out[row * inner:(row + 1) * inner]
        for i in range(inner):
            a = multiply_by_quantized_multiplier((xs[i] - zx) << ADD_LEFT_SHIFT, m0, s0)
            b = multiply_by_quantized_multiplier(
                (y[np.uint64(y_off + i * y_step)] - zy) << ADD_LEFT_SHIFT, m1, s1)
            dst[i] = requantize(a + b, m2, s2, zo, lo, hi)


@njit(cache=True)
def mul(x, y, dims, y_strides, zx, zy, zo, m, shift, lo, hi, out):
    """TFLite int8 MUL: ``(x - zx) * (y - zy)`` requantized by ``m``/``shift``."""
    inner, y_step = dims[-1], y_strides[-1]
    for row in range(x.size // inner):
        y_off = _y_offset(row, dims, y_strides)
        xs, dst = x[row * inner:(row + 1) * inner], out[row * inner:(row + 1) * inner]
        for i in range(inner):
            prod = (xs[i] - zx) * (y[np.uint64(y_off + i * y_step)] - zy)
            dst[i] = requantize(prod, m, shift, zo, lo, hi)


@njit(cache=True)
def leaky_relu(x, zx, zo, m_identity, s_identity, m_alpha, s_alpha, out):
    """TFLite int8 LEAKY_RELU: one multiplier at or above the input zero point, one below."""
    for i in range(x.size):
        v = x[i] - zx
        if v >= 0:
            out[i] = requantize(v, m_identity, s_identity, zo, -128, 127)
        else:
            out[i] = requantize(v, m_alpha, s_alpha, zo, -128, 127)


@njit(cache=True)
def dequantize(q, zero_point, scale, out):
    for i in range(q.size):
        out[i] = (q[i] - zero_point) * scale


@njit(cache=True)
def quantize(x, scale, zero_point, out):
    """float -> int8, rounding half away from zero, as ``edgekit.quant.edge.quantize_array``."""
    for i in range(x.size):
        v = np.float64(x[i]) / scale
        r = np.floor(abs(v) + 0.5)
        out[i] = clamp(np.int64(-r if v < 0 else r) + zero_point, -128, 127)


@njit(cache=True)
def lut_i8(x, table, out):
    """int8 pointwise nonlinearities: ``out = table[x + 128]`` (``numerics.params.lut_params``;
    the firmware's ``ek_lut_i8`` is its twin)."""
    for i in range(x.size):
        out[i] = table[x[i] + 128]
