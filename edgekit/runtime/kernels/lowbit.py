"""Products with packed low-bit weights (``numerics.formats``): each output channel's row is
unpacked from its codes into a one-row buffer just before it is used, so a layer never holds
more than one float row of its weights (the storage stays packed in memory, as on a board).
int8 layers (the ``*_a8`` schemes, and narrow accumulators) unpack an integer row the same way
(``gemm_int8_rows``)."""

from __future__ import annotations

import numpy as np
from numba import njit

from edgekit.numerics.arith import requantize


@njit(cache=True)
def unpack_row(codes, table, per, scales, order, row):
    """``row[order[j]] = sum_k table[codes[k, j // per], j % per] * scales[k, j // group]``:
    weight j of one channel from its K residual orders' codes (``codes[K, bytes]``, uint8, or
    uint16 float16 bit patterns) and scales ``[K, G]``, placed where the rows expect it."""
    n = row.shape[0]
    group = (n + scales.shape[1] - 1) // scales.shape[1]  # numerics.formats.group_width
    row[:] = 0
    for k in range(codes.shape[0]):
        for j in range(n):
            row[order[j]] += table[codes[k, j // per], j % per] * scales[k, j // group]


@njit(cache=True, fastmath={"reassoc"})
def gemm_packed(codes, table, per, scales, order, a, bias, channels_first, amin, amax, row, out):
    """``act(a[p, :] . W[c, :] + bias[c])`` into ``out[c, p]`` (``channels_first``) or
    ``out[p, c]``, W unpacked one channel at a time into ``row``."""
    for c in range(codes.shape[1]):
        unpack_row(codes[:, c], table, per, scales[:, c], order, row)
        for p in range(a.shape[0]):
            s = np.float32(0.0)
            for j in range(row.shape[0]):
                s += a[p, j] * row[j]
            v = min(max(s + bias[c], amin), amax)
            if channels_first:
                out[c, p] = v
            else:
                out[p, c] = v


@njit(cache=True)
def gemm_int8_rows(codes, table, per, order, a, zp, bias, channels_first, multiplier, shift,
                   zero_point, lo, hi, bits, saturate, row, out):
    """int8 layers with packed (or int8) weight rows and a ``bits``-wide accumulator:
    ``requantize(acc[c, p] + bias[c])`` into ``out[c, p]`` (``channels_first``) or
    ``out[p, c]``, where ``acc`` adds ``(a[p, order[j]] - zp) * w[c, j]`` for j in the row's
    (torch) order, clamping every partial sum to ``bits`` (``saturate``) or wrapping the
    total modulo 2^bits; the bias joins in 32 bits. ``w[c, j] = table[codes[c, j // per],
    j % per]``, unpacked one channel at a time into ``row`` (int32). The firmware's
    ``ek_lowbit.c`` adds in the same order, so saturation clamps the same partial sums."""
    n = order.shape[0]
    top = (np.int64(1) << (bits - 1)) - 1
    bottom = -top - 1
    span = np.int64(1) << bits
    for c in range(codes.shape[0]):
        for j in range(n):
            row[j] = table[codes[c, j // per], j % per]
        for p in range(a.shape[0]):
            acc = np.int64(0)
            for j in range(n):
                acc += (np.int64(a[p, order[j]]) - zp) * row[j]
                if saturate:
                    acc = min(max(acc, bottom), top)
            if not saturate:
                acc = (acc - bottom) % span + bottom
            total = np.int32((acc + bias[c] + 2**31) % 2**32 - 2**31)
            v = requantize(total, multiplier[c], shift[c], zero_point, lo, hi)
            if channels_first:
                out[c, p] = v
            else:
                out[p, c] = v
