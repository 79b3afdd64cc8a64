"""Products with packed low-bit weights (``numerics.formats``): each output channel's row is
unpacked from its codes into a one-row buffer just before it is used, so a layer never holds
more than one float row of its weights (the storage stays packed in memory, as on a board)."""

from __future__ import annotations

import numpy as np
from numba import njit


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
