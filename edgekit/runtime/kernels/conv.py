"""Convolutions on NCHW (conv1d runs as conv2d of height 1).

A general (grouped) convolution unrolls each sample's windows into rows, one per output pixel
(``im2row``, into a scratch buffer the memory planner accounts for), and multiplies them with the
weight rows in ``linear.gemm_nt``, whose long contiguous dot products vectorize. A depthwise
convolution has too few taps per output for that to pay, so it accumulates whole output planes
directly, one tap at a time: at stride 1 on a zero-padded copy of each channel, the sums kept at
the padded width so that each tap is one long contiguous multiply-add (``depthwise_planes``),
else with the padding handled by loop bounds, not per-element tests.

Kernels here call only kernels of this module: numba's on-disk cache is invalidated by changes
to a function's own file, not to the files of the functions it calls.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True)
def _span(offset, stride, size, n_out):
    """Outputs o in [first, last) whose input index o * stride + offset lies in [0, size)."""
    return max(0, -(offset // stride)), min(n_out, -((offset - size) // stride))


@njit(cache=True)
def im2row(x, kernel, stride, padding, dilation, out_w, rows):
    """rows[g, p, :] = the window of output pixel p over group g's channels of one CHW sample,
    ordered (channel, ky, kx) like the weights; taps in the padding are zero. Filled one tap at a
    time so each copy reads a contiguous input row between bounds computed once per tap."""
    height, width = x.shape[1], x.shape[2]
    (kh, kw), (sh, sw), (pt, pl), (dh, dw) = kernel, stride, padding, dilation
    per_group = x.shape[0] // rows.shape[0]
    out_h = rows.shape[1] // out_w
    for g in range(rows.shape[0]):
        for ci in range(per_group):
            for ky in range(kh):
                off_y = ky * dh - pt
                y0, y1 = _span(off_y, sh, height, out_h)
                for kx in range(kw):
                    off_x = kx * dw - pl
                    x0, x1 = _span(off_x, sw, width, out_w)
                    k = (ci * kh + ky) * kw + kx
                    for oy in range(out_h):
                        dst = rows[g, oy * out_w:(oy + 1) * out_w, k]
                        if y0 <= oy < y1 and x1 > x0:
                            src = x[g * per_group + ci, oy * sh + off_y]
                            dst[:x0] = 0.0
                            dst[x1:] = 0.0
                            for ox in range(x0, x1):
                                dst[ox] = src[ox * sw + off_x]
                        else:
                            dst[:] = 0.0


@njit(cache=True)
def _axpy(dst, src, scale, stride):
    """dst[i] += scale * src[i * stride]; the unit-stride loop is kept apart so it vectorizes."""
    if stride == 1:
        for i in range(dst.size):
            dst[i] += scale * src[i]
    else:
        for i in range(dst.size):
            dst[i] += scale * src[i * stride]


@njit(cache=True)
def depthwise_conv2d(x, w, bias, stride, padding, dilation, amin, amax, out):
    """One input channel per output channel (``w`` is (O, 1, KH, KW), O a multiple of C)."""
    height, width = x.shape[2], x.shape[3]
    out_h, out_w = out.shape[2], out.shape[3]
    (sh, sw), (pt, pl), (dh, dw) = stride, padding, dilation
    multiplier = w.shape[0] // x.shape[1]
    for n in range(x.shape[0]):
        for oc in range(w.shape[0]):
            src, plane = x[n, oc // multiplier], out[n, oc]
            plane[:, :] = bias[oc]
            for ky in range(w.shape[2]):
                off_y = ky * dh - pt
                y0, y1 = _span(off_y, sh, height, out_h)
                for kx in range(w.shape[3]):
                    off_x = kx * dw - pl
                    x0, x1 = _span(off_x, sw, width, out_w)
                    if x1 > x0:
                        for oy in range(y0, y1):
                            row = src[oy * sh + off_y]
                            _axpy(plane[oy, x0:x1], row[x0 * sw + off_x:], w[oc, 0, ky, kx], sw)
            for oy in range(out_h):
                for ox in range(out_w):
                    plane[oy, ox] = min(max(plane[oy, ox], amin), amax)


@njit(cache=True)
def depthwise_planes(x, top, left, w, bias, dilation, amin, amax, plane, acc, out):
    """Stride-1 convolution of one CHW sample with one input channel per output channel
    (``w`` (O, KH, KW), output channel o reading input channel ``o // (O // C)``). Each input
    channel is copied into ``plane``, the flattened zero-padded (PH, PW) image, and the sums
    are kept at the padded width, ``acc[oy * PW + ox]``: every tap is one contiguous
    multiply-add of ``OH * PW - (KW - 1) * dw`` values, the columns past OW never read back."""
    (dh, dw), pw = dilation, acc.size // out.shape[1]
    n = out.shape[1] * pw - (w.shape[2] - 1) * dw
    repeat = out.shape[0] // x.shape[0]
    plane[:] = 0.0
    for o in range(out.shape[0]):
        if o % repeat == 0:
            for y in range(x.shape[1]):
                base = (top + y) * pw + left
                plane[base:base + x.shape[2]] = x[o // repeat, y]
        acc[:] = bias[o]
        for ky in range(w.shape[1]):
            for kx in range(w.shape[2]):
                scale, start = w[o, ky, kx], ky * dh * pw + kx * dw
                seg = plane[start:start + n]
                for i in range(n):
                    acc[i] += scale * seg[i]
        for oy in range(out.shape[1]):
            row, dst = acc[oy * pw:], out[o, oy]
            for ox in range(out.shape[2]):
                dst[ox] = min(max(row[ox], amin), amax)
