"""Transposed 2-D convolution of one NCHW sample, float32 and int8, output-stationary: each
output element sums the taps that reach it, ``oy + pt = iy * sh + ky * dh`` (and the same on
x), so no scratch is needed. tflite-micro's TRANSPOSE_CONV scatters every input element into an
int32 buffer instead; integer sums do not depend on their order, and the Graph's load
validation bounds every channel's sum inside int32, so the int8 results agree bit for bit.
Weights are output-channels-first, ``w[o, c, ky, kx]`` with c the input channel within o's
group.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from edgekit.numerics.arith import requantize


@njit(cache=True, inline="always")
def _taps(x, zero_point, w, o, oy, ox, stride, padding, dilation, acc):
    """``acc`` plus ``(x - zero_point) * w[o]`` over every tap reaching output (oy, ox)."""
    cin, h, wd = x.shape
    per_group, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    first = o // (w.shape[0] // (cin // per_group)) * per_group
    for ky in range(kh):
        ty = oy + padding[0] - ky * dilation[0]
        if ty < 0 or ty % stride[0] != 0 or ty // stride[0] >= h:
            continue
        iy = ty // stride[0]
        for kx in range(kw):
            tx = ox + padding[1] - kx * dilation[1]
            if tx < 0 or tx % stride[1] != 0 or tx // stride[1] >= wd:
                continue
            ix = tx // stride[1]
            for c in range(per_group):
                acc += (x[first + c, iy, ix] - zero_point) * w[o, c, ky, kx]
    return acc


@njit(cache=True)
def conv_transpose2d(x, w, bias, stride, padding, dilation, out):
    """``x`` (C, H, W) -> ``out`` (O, OH, OW); ``padding`` is (top, left): the output is the
    full transposed convolution from that offset on (bottom/right rows past it are bias)."""
    for o in range(out.shape[0]):
        for oy in range(out.shape[1]):
            for ox in range(out.shape[2]):
                acc = _taps(x, 0.0, w, o, oy, ox, stride, padding, dilation, 0.0)
                out[o, oy, ox] = acc + bias[o]


@njit(cache=True)
def int8_conv_transpose2d(x, zero_point_in, w, bias, stride, padding, dilation, multiplier,
                          shift, zero_point, lo, hi, out):
    """int8 twin: int32 sums of ``(x - zp_in) * w``, plus the int32 bias, requantized per
    output channel as tflite-micro's reference_integer_ops::TransposeConv does."""
    for o in range(out.shape[0]):
        m, s, b = multiplier[o], shift[o], np.int64(bias[o])
        for oy in range(out.shape[1]):
            for ox in range(out.shape[2]):
                acc = _taps(x, np.int64(zero_point_in), w, o, oy, ox, stride, padding,
                            dilation, np.int64(0))
                out[o, oy, ox] = requantize(acc + b, m, s, zero_point, lo, hi)
