"""Pooling kernels on NCHW. Padding never enters the max (one kernel for float32 and int8); for
the average it counts as zeros when ``count_include_pad`` and is left out of the divisor
otherwise (torch's semantics)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def avg_pool2d(x, kernel, stride, padding, count_include_pad, out):
    """Average pooling; ``padding`` is (top, left), the bottom/right edge is implied by
    ``out``'s shape (a window never reaches past the padded input)."""
    height, width = x.shape[2], x.shape[3]
    (kh, kw), (sh, sw), (pt, pl) = kernel, stride, padding
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            src = x[n, c]
            for oy in range(out.shape[2]):
                for ox in range(out.shape[3]):
                    acc = 0.0
                    count = 0
                    for ky in range(kh):
                        iy = oy * sh - pt + ky
                        if 0 <= iy < height:
                            for kx in range(kw):
                                ix = ox * sw - pl + kx
                                if 0 <= ix < width:
                                    acc += src[iy, ix]
                                    count += 1
                    out[n, c, oy, ox] = acc / (kh * kw if count_include_pad else count)


@njit(cache=True)
def _span(offset, stride, size, n_out):
    """Outputs o in [first, last) whose input index o * stride + offset lies in [0, size)."""
    return max(0, -(offset // stride)), min(n_out, -((offset - size) // stride))


@njit(cache=True)
def max_pool2d(x, kernel, stride, padding, dilation, lowest, out):
    """Each output row is the running maximum of the input rows its windows cover, one tap at
    a time, with the padding handled by loop bounds (unsigned indices: no negative-index
    checks in the inner loop). ``lowest`` is the dtype's floor (-inf, -128): padding never
    enters the max. One kernel for every dtype: a max needs no arithmetic."""
    height, width = x.shape[2], x.shape[3]
    (kh, kw), (sh, sw), (pt, pl), (dh, dw) = kernel, stride, padding, dilation
    if (pt == 0 and pl == 0 and (out.shape[2] - 1) * sh + (kh - 1) * dh < height
            and (out.shape[3] - 1) * sw + (kw - 1) * dw < width):
        _max_inside(x.reshape(-1, height, width), kh, kw, sh, sw, dh, dw,
                         out.reshape(-1, out.shape[2], out.shape[3]))
        return
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            src, dst = x[n, c], out[n, c]
            for oy in range(out.shape[2]):
                best = dst[oy]
                best[:] = lowest
                for ky in range(kh):
                    iy = oy * sh - pt + ky * dh
                    if 0 <= iy < height:
                        line = src[iy]
                        for kx in range(kw):
                            off = kx * dw - pl
                            x0, x1 = _span(off, sw, width, out.shape[3])
                            for ox in range(x0, x1):
                                v = line[np.uint64(ox * sw + off)]
                                if v > best[ox]:
                                    best[ox] = v


@njit(cache=True)
def _max_inside(x, kh, kw, sh, sw, dh, dw, out):
    """Max pooling when every window lies inside the input (no padding, no partial window): per
    output row, the maximum over the window's input rows first (whole rows, a loop that
    vectorizes), then over the taps of each window along that one row."""
    width = x.shape[2]
    tmp = np.empty(width, x.dtype)
    for c in range(x.shape[0]):
        src, dst = x[c], out[c]
        for oy in range(out.shape[1]):
            tmp[:] = src[oy * sh]
            for ky in range(1, kh):
                line = src[oy * sh + ky * dh]
                for i in range(width):
                    tmp[i] = max(tmp[i], line[i])
            row = dst[oy]
            for ox in range(out.shape[2]):
                best = tmp[ox * sw]
                for kx in range(1, kw):
                    best = max(best, tmp[np.uint64(ox * sw + kx * dw)])
                row[ox] = best


@njit(cache=True)
def row_mean(x, out):
    """Mean of each row of ``x`` (``(rows, n)``) into ``out`` (``(rows,)``): global average pool."""
    for r in range(x.shape[0]):
        total = 0.0
        for i in range(x.shape[1]):
            total += x[r, i]
        out[r] = total / x.shape[1]
