"""Integer average pooling on raw values: the int8 Graph's (input and output share one
quantization, TFLite's rounding) and the int8 spiking Graph's (window sums; the output's scale
carries the division). Both sum a window the same way. Max pooling needs no arithmetic:
``pool.max_pool2d`` serves every dtype."""

from __future__ import annotations

from numba import njit


@njit(cache=True)
def _window_sum(src, oy, ox, kernel, stride, padding):
    """The sum of output (oy, ox)'s window over the plane ``src`` and how many of its taps lie
    inside it (padding adds nothing)."""
    (kh, kw), (sh, sw), (pt, pl) = kernel, stride, padding
    y0, y1 = max(oy * sh - pt, 0), min(oy * sh - pt + kh, src.shape[0])
    x0, x1 = max(ox * sw - pl, 0), min(ox * sw - pl + kw, src.shape[1])
    acc = 0
    for iy in range(y0, y1):
        for ix in range(x0, x1):
            acc += src[iy, ix]
    return acc, (y1 - y0) * (x1 - x0)


@njit(cache=True)
def _row_sum(row):
    acc = 0
    for v in row:
        acc += v
    return acc


@njit(cache=True)
def _rounded_mean(acc, count):
    """TFLite's int8 average: divided rounding half away from zero (``(sum +- count/2) /
    count``, truncating), clamped to int8."""
    half = count // 2
    avg = (acc + half) // count if acc > 0 else -((-acc + half) // count)
    return min(max(avg, -128), 127)


@njit(cache=True)
def avg_pool2d(x, kernel, stride, padding, count_include_pad, zero_point, out):
    """The int8 average of each window. Padded taps count only with ``count_include_pad``, as
    the zero point (the real value 0), and the divisor is then the whole window."""
    window = kernel[0] * kernel[1]
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for oy in range(out.shape[2]):
                for ox in range(out.shape[3]):
                    acc, count = _window_sum(x[n, c], oy, ox, kernel, stride, padding)
                    if count_include_pad:
                        acc += (window - count) * zero_point
                        count = window
                    out[n, c, oy, ox] = _rounded_mean(acc, count)


@njit(cache=True)
def sum_pool2d(x, kernel, stride, padding, out):
    """Average pooling of an int8 SNN: each window's integer sum."""
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for oy in range(out.shape[2]):
                for ox in range(out.shape[3]):
                    out[n, c, oy, ox] = _window_sum(x[n, c], oy, ox, kernel, stride, padding)[0]


@njit(cache=True)
def global_avg(x, out):
    """``avg_pool2d`` over whole planes, ``x`` (N * C, H * W) -> ``out`` (N * C)."""
    for r in range(x.shape[0]):
        out[r] = _rounded_mean(_row_sum(x[r]), x.shape[1])


@njit(cache=True)
def row_sums(x, out):
    """Global average pooling of an int8 SNN: each row's integer sum, ``x`` (N * C, H * W)."""
    for r in range(x.shape[0]):
        out[r] = _row_sum(x[r])
