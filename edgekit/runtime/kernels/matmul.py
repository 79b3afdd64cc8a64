"""Kernels of the matmul family: the int8 batched matrix product of two activations, as
tflite-micro's BATCH_MATMUL computes it (exact int32 sums of ``(x - zx) * (y - zy)``, one
requantization: ``numerics.arith``), and the row gather of embedding.

The arithmetic comes from ``edgekit.numerics.arith`` (inlined): numba's on-disk cache does not see
changes to that file, so clear the cache (``NUMBA_CACHE_DIR`` or ``__pycache__``) after editing it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from edgekit.numerics.arith import requantize


@njit(cache=True)
def int8_batch_matmul(x, y, x_index, y_index, zx, zy, multiplier, shift, zero_point, lo, hi,
                      out):
    """``out[n, b] = requantize((x[n, x_index[b]] - zx) @ (y[n, y_index[b]] - zy))`` for x of
    shape (N, Bx, M, K), y (N, By, K, P) and out (N, B, M, P); the index arrays say which
    matrix of each operand a broadcast output matrix reads, and an operand with a batch of 1
    (a constant) serves every sample. The sums are int32, as TFLite's."""
    k, p = x.shape[3], y.shape[3]
    column = np.empty(k, np.int32)
    for n in range(out.shape[0]):
        for b in range(out.shape[1]):
            xs = x[n % x.shape[0], x_index[b]]
            ys, dst = y[n % y.shape[0], y_index[b]], out[n, b]
            for j in range(p):
                for t in range(k):
                    column[t] = np.int32(ys[t, j]) - np.int32(zy)
                for i in range(out.shape[2]):
                    acc = np.int32(0)
                    for t in range(k):
                        acc = np.int32(acc + (np.int32(xs[i, t]) - np.int32(zx)) * column[t])
                    dst[i, j] = requantize(acc, multiplier, shift, zero_point, lo, hi)


@njit(cache=True)
def gather_rows(indices, table, out):
    """``out[r] = table[indices[r]]`` (embedding; float32 or int8 tables alike). Sessions
    refuse indices outside the table; an index that gets here anyway (raw arrays) is clamped
    to it, so no kernel ever reads outside its table."""
    last = table.shape[0] - 1
    for r in range(indices.shape[0]):
        i = indices[r]
        out[r, :] = table[0 if i < 0 else last if i > last else i, :]
