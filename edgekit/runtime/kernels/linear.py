"""Matrix products: the linear layer, and the inner loop of every non-depthwise convolution."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, fastmath={"reassoc"})
def gemm_nt(a, b, bias, bias_per_row, amin, amax, out):
    """``out[i, j] = act(a[i, :] . b[j, :] + bias)``, bias indexed by i or by j.

    Both operands are read along contiguous rows; 2x2 blocks of outputs share each load and the
    dot products vectorize (``reassoc`` lets LLVM split the sums into lanes, as BLAS does). An odd
    last row or column is clamped onto its neighbour and computed twice rather than special-cased.
    """
    rows, cols, depth = a.shape[0], b.shape[0], a.shape[1]
    for i in range(0, rows, 2):
        i1 = min(i + 1, rows - 1)
        a0, a1 = a[i], a[i1]
        for j in range(0, cols, 2):
            j1 = min(j + 1, cols - 1)
            b0, b1 = b[j], b[j1]
            s00 = s01 = s10 = s11 = np.float32(0.0)
            for k in range(depth):
                s00 += a0[k] * b0[k]
                s01 += a0[k] * b1[k]
                s10 += a1[k] * b0[k]
                s11 += a1[k] * b1[k]
            if bias_per_row:
                c00, c01, c10, c11 = bias[i], bias[i], bias[i1], bias[i1]
            else:
                c00, c01, c10, c11 = bias[j], bias[j1], bias[j], bias[j1]
            out[i, j] = min(max(s00 + c00, amin), amax)
            out[i, j1] = min(max(s01 + c01, amin), amax)
            out[i1, j] = min(max(s10 + c10, amin), amax)
            out[i1, j1] = min(max(s11 + c11, amin), amax)
