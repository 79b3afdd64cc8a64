"""Transposed 2-D convolution of one sample, float32 and int8, output-stationary: each output
element sums the taps that reach it, ``oy + pt = iy * sh + ky * dh`` (and the same on x), so
no output-sized buffer is needed. The input is first copied channels-last (int8: less its zero
point, as int16) and the weights reordered (O, KH, KW, C) in prepare, so each tap is one
contiguous multiply-add over a group's channels.

tflite-micro's TRANSPOSE_CONV scatters every input element into an int32 buffer instead;
integer sums do not depend on their order, and the Graph's load validation bounds every
channel's sum inside int32, so the int8 results agree bit for bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from edgekit.numerics.arith import requantize


@njit(cache=True)
def channels_last(x, zero_point, out):
    """``out[y, i, c] = x[c, y, i] - zero_point``: one (C, H, W) sample as (H, W, C)."""
    for c in range(x.shape[0]):
        for y in range(x.shape[1]):
            for i in range(x.shape[2]):
                out[y, i, c] = x[c, y, i] - zero_point


@njit(cache=True, inline="always")
def _taps(x, w, o, first, oy, ox, stride, padding, dilation, acc):
    """``acc`` plus the products of output (oy, ox)'s taps: ``x`` (H, W, C) channels-last,
    ``w`` (O, KH, KW, C / groups), ``first`` the group's first input channel."""
    h, wd = x.shape[0], x.shape[1]
    kh, kw, per_group = w.shape[1], w.shape[2], w.shape[3]
    for ky in range(kh):
        ty = oy + padding[0] - ky * dilation[0]
        if ty < 0 or ty % stride[0] != 0 or ty // stride[0] >= h:
            continue
        row = x[ty // stride[0]]
        for kx in range(kw):
            tx = ox + padding[1] - kx * dilation[1]
            if tx < 0 or tx % stride[1] != 0 or tx // stride[1] >= wd:
                continue
            xs, ws = row[tx // stride[1], first:first + per_group], w[o, ky, kx]
            for c in range(per_group):  # unsigned: no negative-index wrap, so it vectorizes
                acc += xs[np.uint64(c)] * ws[np.uint64(c)]
    return acc


@njit(cache=True, fastmath={"reassoc"})
def conv_transpose2d(x, w, bias, stride, padding, dilation, out):
    """``x`` (H, W, C) channels-last -> ``out`` (O, OH, OW); ``padding`` is (top, left): the
    output is the full transposed convolution from that offset on (rows past it: the bias).
    ``reassoc`` lets the channel sums vectorize (as ``linear.gemm_nt``)."""
    outs = w.shape[0] // (x.shape[2] // w.shape[3])
    for o in range(out.shape[0]):
        first = o // outs * w.shape[3]
        for oy in range(out.shape[1]):
            for ox in range(out.shape[2]):
                acc = _taps(x, w, o, first, oy, ox, stride, padding, dilation, np.float32(0))
                out[o, oy, ox] = acc + bias[o]


@njit(cache=True)
def int8_conv_transpose2d(x, w, bias, stride, padding, dilation, multiplier, shift, zero_point,
                          lo, hi, out):
    """int8 twin on ``x`` (H, W, C) holding input less its zero point (int16): int32 sums,
    plus the int32 bias, requantized per output channel as tflite-micro's
    reference_integer_ops::TransposeConv does."""
    outs = w.shape[0] // (x.shape[2] // w.shape[3])
    for o in range(out.shape[0]):
        first, m, s, b = o // outs * w.shape[3], multiplier[o], shift[o], bias[o]
        for oy in range(out.shape[1]):
            for ox in range(out.shape[2]):
                acc = _taps(x, w, o, first, oy, ox, stride, padding, dilation, np.int32(0))
                out[o, oy, ox] = requantize(np.int64(acc) + b, m, s, zero_point, lo, hi)
