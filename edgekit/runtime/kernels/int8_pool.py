"""int8 pooling: input and output share one quantization, so both work on the raw values.
Padding never enters the max (as TFLite's MAX_POOL_2D); the average is TFLite's."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _span(offset, stride, size, n_out):
    """Outputs o in [first, last) whose input index o * stride + offset lies in [0, size)."""
    return max(0, -(offset // stride)), min(n_out, -((offset - size) // stride))


@njit(cache=True)
def max_pool2d(x, kernel, stride, padding, dilation, out):
    """Each output row is the running maximum of the input rows its windows cover, one tap at
    a time, with the padding handled by loop bounds (unsigned indices: no negative-index
    checks in the inner loop)."""
    height, width = x.shape[2], x.shape[3]
    (kh, kw), (sh, sw), (pt, pl), (dh, dw) = kernel, stride, padding, dilation
    if (pt == 0 and pl == 0 and (out.shape[2] - 1) * sh + (kh - 1) * dh < height
            and (out.shape[3] - 1) * sw + (kw - 1) * dw < width):
        _max_pool_inside(x.reshape(-1, height, width), kh, kw, sh, sw, dh, dw,
                         out.reshape(-1, out.shape[2], out.shape[3]))
        return
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            src, dst = x[n, c], out[n, c]
            for oy in range(out.shape[2]):
                best = dst[oy]
                best[:] = -128
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
def _max_pool_inside(x, kh, kw, sh, sw, dh, dw, out):
    """The common case, every window inside the input (no padding, no partial window): per
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
def avg_pool2d(x, kernel, stride, padding, count_include_pad, zero_point, out):
    """TFLite's int8 average: the window's sum of raw values divided rounding half away from zero
    (``(sum +- count/2) / count``, truncating). Padded taps count only with
    ``count_include_pad``, as the zero point (the real value 0), and the divisor is then the
    whole window."""
    height, width = x.shape[2], x.shape[3]
    (kh, kw), (sh, sw), (pt, pl) = kernel, stride, padding
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            src = x[n, c]
            for oy in range(out.shape[2]):
                y0, y1 = max(oy * sh - pt, 0), min(oy * sh - pt + kh, height)
                for ox in range(out.shape[3]):
                    x0, x1 = max(ox * sw - pl, 0), min(ox * sw - pl + kw, width)
                    acc = 0
                    for iy in range(y0, y1):
                        for ix in range(x0, x1):
                            acc += src[iy, ix]
                    count = (y1 - y0) * (x1 - x0)
                    if count_include_pad:
                        acc += (kh * kw - count) * zero_point
                        count = kh * kw
                    half = count // 2
                    avg = (acc + half) // count if acc > 0 else -((-acc + half) // count)
                    out[n, c, oy, ox] = min(max(avg, -128), 127)


@njit(cache=True)
def global_avg(x, out):
    """``avg_pool2d`` over whole planes, ``x`` (N * C, H * W) -> ``out`` (N * C): each row's sum
    divided as there, without the window bounds."""
    count = x.shape[1]
    half = count // 2
    for r in range(x.shape[0]):
        acc = 0
        for v in x[r]:
            acc += v
        avg = (acc + half) // count if acc > 0 else -((-acc + half) // count)
        out[r] = min(max(avg, -128), 127)
