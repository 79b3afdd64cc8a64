"""int8 elementwise kernels on flat C-contiguous arrays, each TFLite's reference arithmetic.

Multipliers and shifts arrive precomputed (``edgekit.numerics.params``); the binary kernels
(and prelu) take both operands broadcast as ``elementwise.binary`` does (``dims``, ``x_strides``,
``y_strides``). Also the conversions the float-inside kernels (softmax, layernorm) use at their
edges, which round as ``edgekit.quant.edge`` does. numba's cache does not see edits to
``edgekit.numerics.arith``: clear it after changing that file.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from edgekit.numerics.arith import (
    clamp,
    count_leading_sign_bits,
    multiply_by_quantized_multiplier,
    reciprocal,
    requantize,
    srdhm,
)
from edgekit.numerics.params import ADD_LEFT_SHIFT
from edgekit.runtime.kernels.elementwise import broadcast_rows


@njit(cache=True)
def subtract(x, zero_point, out):
    """``out = x - zero_point`` (int8 in, int16 out): real values up to the scale, so padding
    with 0 afterwards pads with the real value 0."""
    for i in range(x.size):
        out[i] = x[i] - zero_point


@njit(cache=True, inline="always")
def _add_one(a, b, args):
    sign, zx, zy, zo, m0, m1, m2, s0, s1, s2, lo, hi = args
    ra = multiply_by_quantized_multiplier((a - zx) << ADD_LEFT_SHIFT, m0, s0)
    rb = multiply_by_quantized_multiplier((b - zy) << ADD_LEFT_SHIFT, m1, s1)
    return requantize(ra + sign * rb, m2, s2, zo, lo, hi)


@njit(cache=True)
def add(x, y, dims, x_strides, y_strides, sign, zx, zy, zo, m, shift, lo, hi, out):
    """TFLite int8 ADD (``sign`` 1) and SUB (``sign`` -1): each operand ``(v - z) << 20``
    rescaled by its multiplier (``m[0]``, ``m[1]``), their sum or difference by ``m[2]``, plus
    ``zo``, clamped to ``[lo, hi]``."""
    broadcast_rows(x, y, dims, x_strides, y_strides, out, _add_one,
                   (sign, zx, zy, zo, m[0], m[1], m[2], shift[0], shift[1], shift[2], lo, hi))


@njit(cache=True, inline="always")
def _mul_one(a, b, args):
    zx, zy, zo, m, shift, lo, hi = args
    return requantize((a - zx) * (b - zy), m, shift, zo, lo, hi)


@njit(cache=True)
def mul(x, y, dims, x_strides, y_strides, zx, zy, zo, m, shift, lo, hi, out):
    """TFLite int8 MUL: ``(x - zx) * (y - zy)`` requantized by ``m``/``shift``."""
    broadcast_rows(x, y, dims, x_strides, y_strides, out, _mul_one,
                   (zx, zy, zo, m, shift, lo, hi))


@njit(cache=True, inline="always")
def _host_rounding_divide_by_pot(x, exponent):
    """gemmlowp's RoundingDivideByPOT as tflite-micro's host build runs it, also where DIV's
    exponent exceeds 31 (a dividend of a step or two over a large divisor; undefined in C): the
    mask ``(1 << exponent) - 1`` formed in 64 bits, the count taken mod 64, truncated to int32,
    and the int32 shift's count taken mod 32, as x86 does. Below 32 it is the usual rounding."""
    mask = ((1 << (exponent & 63)) - 1) & 0xFFFFFFFF
    if mask >= 1 << 31:
        mask -= 1 << 32
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> (exponent & 31)) + (1 if (x & mask) > threshold else 0)


@njit(cache=True, inline="always")
def divide(v1, v2, zo, m, shift, lo, hi):
    """One TFLite int8 DIV (reference_ops::DivElementwise) of the zero-point-free values: ``v1``
    scaled up to its headroom times the divisor's fixed-point reciprocal, then ``(m, shift)``
    less both scalings, as tflite-micro computes it bit for bit (quirks of its final shift
    included: ``_host_rounding_divide_by_pot``). A divisor of 0 (undefined in TFLite) gives the
    bound of the dividend's sign, ``zo`` for 0 / 0, as a real division saturates."""
    if v2 == 0:
        return hi if v1 > 0 else lo if v1 < 0 else clamp(zo, lo, hi)
    if v2 < 0:
        v1, v2 = -v1, -v2
    inverse, inverse_shift = reciprocal(v2)
    headroom = count_leading_sign_bits(v1)
    quotient = srdhm(v1 << headroom, inverse)
    exponent = inverse_shift + headroom - shift
    return clamp(_host_rounding_divide_by_pot(srdhm(quotient, m), exponent) + zo, lo, hi)


@njit(cache=True, inline="always")
def _div_one(a, b, args):
    zx, zy, zo, m, shift, lo, hi = args
    return divide(np.int64(a) - zx, np.int64(b) - zy, zo, m, shift, lo, hi)


@njit(cache=True)
def div(x, y, dims, x_strides, y_strides, zx, zy, zo, m, shift, lo, hi, out):
    """TFLite int8 DIV of broadcast operands (``divide`` per element)."""
    broadcast_rows(x, y, dims, x_strides, y_strides, out, _div_one,
                   (zx, zy, zo, m, shift, lo, hi))


@njit(cache=True, inline="always")
def _select_one(a, b, take_max):
    return max(a, b) if take_max else min(a, b)


@njit(cache=True)
def select(x, y, dims, x_strides, y_strides, take_max, out):
    """TFLite int8 MAXIMUM (``take_max``) and MINIMUM: inputs and output share one
    quantization, so the larger (smaller) stored value is the larger (smaller) real one."""
    broadcast_rows(x, y, dims, x_strides, y_strides, out, _select_one, take_max)


@njit(cache=True, inline="always")
def _prelu_one(x, a, args):
    zx, zo, m_id, s_id, m_alpha, s_alpha = args
    v = x - zx
    if v >= 0:
        return requantize(v, m_id, s_id, zo, -128, 127)
    return requantize(v * a, m_alpha, s_alpha, zo, -128, 127)


@njit(cache=True)
def prelu(x, alpha, dims, x_strides, a_strides, zx, zo, m_id, s_id, m_alpha, s_alpha, out):
    """TFLite int8 PRELU (tflite-micro's reference): ``x' = x - zx``; ``x' * (m_id, s_id)``
    where ``x' >= 0``, else ``x' * alpha`` by ``(m_alpha, s_alpha)`` (alpha's zero point is 0);
    plus ``zo``. alpha broadcasts to x as a binary op's second operand does."""
    broadcast_rows(x, alpha, dims, x_strides, a_strides, out, _prelu_one,
                   (zx, zo, m_id, s_id, m_alpha, s_alpha))


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
