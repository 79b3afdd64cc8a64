"""int8 average pooling: input and output share one quantization, so it works on the raw values
with TFLite's rounding. Max pooling needs no arithmetic: ``pool.max_pool2d`` serves every dtype."""

from __future__ import annotations

from numba import njit


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
