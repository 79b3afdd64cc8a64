"""Integer matrix products with TFLite's requantization: conv (after im2row), linear, and the
per-channel requantization of depthwise accumulators.

Accumulation is exact (numba's int64, which equals TFLite's int32 wherever TFLite does not
overflow), so the only rounding is ``requantize``'s, identical to tflite-micro's.

The arithmetic comes from ``edgekit.quant.arith`` (inlined): numba's on-disk cache does not see
changes to that file, so clear the cache (``NUMBA_CACHE_DIR`` or ``__pycache__``) after editing it.
"""

from __future__ import annotations

from numba import njit

from edgekit.quant.arith import requantize


@njit(cache=True)
def gemm_requant(a, b, bias, per_row, multiplier, shift, zero_point, lo, hi, out):
    """``out[i, j] = requantize(a[i, :] . b[j, :] + bias[c])`` with channel ``c`` = i if
    ``per_row`` else j, indexing ``bias``, ``multiplier`` and ``shift``.

    Both operands are read along contiguous rows, 2x2 outputs per pass sharing each load (as
    ``linear.gemm_nt``); an odd last row or column is computed twice rather than special-cased.
    """
    rows, cols, depth = a.shape[0], b.shape[0], a.shape[1]
    for i in range(0, rows, 2):
        i1 = min(i + 1, rows - 1)
        a0, a1 = a[i], a[i1]
        for j in range(0, cols, 2):
            j1 = min(j + 1, cols - 1)
            b0, b1 = b[j], b[j1]
            s00 = s01 = s10 = s11 = 0
            for k in range(depth):
                s00 += a0[k] * b0[k]
                s01 += a0[k] * b1[k]
                s10 += a1[k] * b0[k]
                s11 += a1[k] * b1[k]
            for r, c, acc in ((i, j, s00), (i, j1, s01), (i1, j, s10), (i1, j1, s11)):
                ch = r if per_row else c
                out[r, c] = requantize(acc + bias[ch], multiplier[ch], shift[ch], zero_point,
                                       lo, hi)


@njit(cache=True)
def requantize_channels(acc, multiplier, shift, zero_point, lo, hi, out):
    """``out[c, p] = requantize(acc[c, p])`` with channel c's multiplier and shift."""
    for c in range(acc.shape[0]):
        m, s = multiplier[c], shift[c]
        for p in range(acc.shape[1]):
            out[c, p] = requantize(acc[c, p], m, s, zero_point, lo, hi)
