"""Integer matrix products with TFLite's requantization: conv (after im2row), linear, and the
per-channel requantization of depthwise accumulators.

Accumulation is exact int32 as in TFLite, so the only rounding is ``requantize``'s, identical to
tflite-micro's.

The arithmetic comes from ``edgekit.numerics.arith`` (inlined): numba's on-disk cache does not see
changes to that file, so clear the cache (``NUMBA_CACHE_DIR`` or ``__pycache__``) after editing it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from edgekit.numerics.arith import requantize


@njit(cache=True)
def gemm_requant(a, b, bias, per_row, multiplier, shift, zero_point, lo, hi, out):
    """``out[i, j] = requantize(a[i, :] . b[j, :] + bias[c])`` with channel ``c`` = i if
    ``per_row`` else j, indexing ``bias``, ``multiplier`` and ``shift``.

    Both operands are read along contiguous rows, 2x2 outputs per pass sharing each load (as
    ``linear.gemm_nt``); an odd last row or column is computed twice rather than special-cased.
    The sums are kept in int32 explicitly (numba would widen them to int64), which lets LLVM use
    8-lane integer multiply-adds: TFLite accumulates in int32 too. Each pair of output rows is
    requantized in one pass over a small buffer, a loop that vectorizes, unlike requantizing
    inside the 2x2 blocks.
    """
    rows, cols, depth = a.shape[0], b.shape[0], a.shape[1]
    acc = np.empty((2, cols), np.int32)
    for i in range(0, rows, 2):
        i1 = min(i + 1, rows - 1)
        a0, a1 = a[i], a[i1]
        for j in range(0, cols, 2):
            j1 = min(j + 1, cols - 1)
            b0, b1 = b[j], b[j1]
            s00 = s01 = s10 = s11 = np.int32(0)
            for k in range(depth):
                x0, x1 = np.int32(a0[k]), np.int32(a1[k])
                y0, y1 = np.int32(b0[k]), np.int32(b1[k])
                s00 = np.int32(s00 + x0 * y0)
                s01 = np.int32(s01 + x0 * y1)
                s10 = np.int32(s10 + x1 * y0)
                s11 = np.int32(s11 + x1 * y1)
            acc[0, j], acc[0, j1], acc[1, j], acc[1, j1] = s00, s01, s10, s11
        for r, row in ((0, i), (1, i1)):
            dst = out[row]
            if per_row:
                m, s, b_row = multiplier[row], shift[row], bias[row]
                for j in range(cols):
                    dst[j] = requantize(acc[r, j] + b_row, m, s, zero_point, lo, hi)
            else:
                for j in range(cols):
                    dst[j] = requantize(acc[r, j] + bias[j], multiplier[j], shift[j], zero_point,
                                        lo, hi)


@njit(cache=True)
def requantize_channels(acc, multiplier, shift, zero_point, lo, hi, out):
    """``out[c, p] = requantize(acc[c, p])`` with channel c's multiplier and shift."""
    for c in range(acc.shape[0]):
        m, s = multiplier[c], shift[c]
        for p in range(acc.shape[1]):
            out[c, p] = requantize(acc[c, p], m, s, zero_point, lo, hi)
