"""Resize kernels on NCHW, reading the per-row and per-column taps of
``edgekit.numerics.params.resize_taps`` (so the coordinates are computed once, as TFLite does).
Nearest moves values (one kernel for every dtype); bilinear has a float32 kernel and TFLite's
int8 one (``ResizeBilinearInteger``), twin of the firmware's ``ek_resize_bilinear``."""

from __future__ import annotations

from numba import njit


@njit(cache=True)
def nearest(x, rows, cols, out):
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            src, dst = x[n, c], out[n, c]
            for oy in range(out.shape[2]):
                row = src[rows[oy]]
                for ox in range(out.shape[3]):
                    dst[oy, ox] = row[cols[ox]]


@njit(cache=True)
def bilinear_f32(x, y0, y1, fy, x0, x1, fx, out):
    """TFLite's float sum, in its order: v00 (1 - dy)(1 - dx) + v10 dy (1 - dx) + v01 (1 - dy)
    dx + v11 dy dx."""
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            src, dst = x[n, c], out[n, c]
            for oy in range(out.shape[2]):
                a, b = src[y0[oy]], src[y1[oy]]
                dy = fy[oy]
                for ox in range(out.shape[3]):
                    dx = fx[ox]
                    dst[oy, ox] = (a[x0[ox]] * (1 - dy) * (1 - dx) + b[x0[ox]] * dy * (1 - dx)
                                   + a[x1[ox]] * (1 - dy) * dx + b[x1[ox]] * dy * dx)


@njit(cache=True)
def bilinear_i8(x, y0, y1, wy, x0, x1, wx, out):
    """TFLite's int8 bilinear: weights in 1/1024ths on each axis, the sum in 2^-20ths rounded
    half away from zero (tflite-micro builds without TFLITE_SINGLE_ROUNDING). The sum fits in
    int32 (|weights| add to at most 2048 per axis), as the firmware computes it."""
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            src, dst = x[n, c], out[n, c]
            for oy in range(out.shape[2]):
                a, b = src[y0[oy]], src[y1[oy]]
                ly, hy = 1024 - wy[oy], wy[oy]
                for ox in range(out.shape[3]):
                    lx, hx = 1024 - wx[ox], wx[ox]
                    acc = (a[x0[ox]] * ly * lx + b[x0[ox]] * hy * lx + a[x1[ox]] * ly * hx
                           + b[x1[ox]] * hy * hx)
                    if acc > 0:
                        dst[oy, ox] = (acc + (1 << 19)) >> 20
                    else:
                        dst[oy, ox] = -((-acc + (1 << 19)) >> 20)
