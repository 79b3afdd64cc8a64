"""Convolutions on NCHW (conv1d runs as conv2d of height 1).

A general (grouped) convolution unrolls each sample's windows into rows, one per output pixel,
in a scratch buffer the memory planner accounts for, and multiplies them with the weight rows in
``linear.gemm_nt``, whose long contiguous dot products vectorize. The runtime builds the rows
from a channels-last copy (``int8_conv.window_rows``, a few contiguous runs per row);
``im2row`` builds them straight from NCHW for ``edgekit.learn``. A depthwise
convolution has too few taps per output for that to pay, so it accumulates whole output planes
directly, one tap at a time, on a zero-padded copy of each channel with the sums kept at the
padded width so that each tap is one long contiguous multiply-add (``depthwise_planes``; at
other strides the padded plane is split by stride phase first, ``strided_depthwise``). A
pointwise convolution multiplies the weights with the input planes as they are
(``pointwise``).

Kernels here call only kernels of this module: numba's on-disk cache is invalidated by changes
to a function's own file, not to the files of the functions it calls.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _axpy(acc, scale, src, start, n):
    """``acc[:n] += scale * src[start:start + n]`` on flat arrays. Unsigned indices spare
    numba's negative-index checks, so the loop vectorizes (2-3x faster than on slices); the
    sums are the same, in the same order."""
    for i in range(n):
        acc[np.uint64(i)] += scale * src[np.uint64(start + i)]


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
        if o % repeat == 0:  # element loops: a slice assignment per row cost 2x the kernel
            for y in range(x.shape[1]):
                base, src = (top + y) * pw + left, x[o // repeat, y]
                for i in range(x.shape[2]):
                    plane[np.uint64(base + i)] = src[np.uint64(i)]
        acc[:] = bias[o]
        for ky in range(w.shape[1]):
            for kx in range(w.shape[2]):
                _axpy(acc, w[o, ky, kx], plane, ky * dh * pw + kx * dw, n)
        for oy in range(out.shape[1]):
            dst = out[o, oy]
            for ox in range(out.shape[2]):
                dst[np.uint64(ox)] = min(max(acc[np.uint64(oy * pw + ox)], amin), amax)


@njit(cache=True)
def strided_depthwise(x, top, left, w, bias, stride, dilation, amin, amax, phases, acc, out):
    """``depthwise_planes`` at any stride. Each input channel is copied into ``phases``
    (SH * SW, QH, QW), the zero-padded plane split by stride phase: padded pixel (r, c) goes to
    phase ``(r % SH) * SW + c % SW`` at (r // SH, c // SW), so every tap of every output reads
    one phase at the output's own (oy, ox) plus a fixed offset. The sums are kept at the phase
    width, ``acc[oy * QW + ox]``, making each tap one contiguous multiply-add of
    ``(OH - 1) * QW + OW`` values (the columns past OW are never read back)."""
    (sh, sw), (dh, dw), (qh, qw) = stride, dilation, phases.shape[1:]
    out_h, out_w = out.shape[1], out.shape[2]
    n = (out_h - 1) * qw + out_w
    repeat, flat = out.shape[0] // x.shape[0], phases.reshape(-1)
    rows, cols = min(x.shape[1], qh * sh - top), min(x.shape[2], qw * sw - left)
    flat[:] = 0.0
    for o in range(out.shape[0]):
        if o % repeat == 0:
            qr, py = divmod(top, sh)
            for y in range(rows):
                src = x[o // repeat, y]
                for px in range(sw):
                    first = (px - left) % sw
                    dst = phases[py * sw + px, qr, (left + first) // sw:]
                    for k in range((cols - first + sw - 1) // sw):
                        dst[k] = src[first + k * sw]
                py += 1
                if py == sh:  # divmod(top + y, sh) without a division per row
                    qr, py = qr + 1, 0
        acc[:] = bias[o]
        for ky in range(w.shape[1]):
            for kx in range(w.shape[2]):
                (qy, py), (qx, px) = divmod(ky * dh, sh), divmod(kx * dw, sw)
                _axpy(acc, w[o, ky, kx], flat, ((py * sw + px) * qh + qy) * qw + qx, n)
        for oy in range(out_h):
            row, dst = acc[oy * qw:], out[o, oy]
            for ox in range(out_w):
                dst[ox] = min(max(row[ox], amin), amax)


@njit(cache=True)
def pointwise(x, w, bias, amin, amax, out):
    """A 1x1 stride-1 unpadded convolution of one sample, ``x`` (C, P) -> ``out`` (O, P):
    ``out[o] = act(bias[o] + sum_c w[o, c] * x[c])``, each weight scaling a contiguous input
    plane into the output row (a loop LLVM vectorizes), the channels summed in order. Four
    output rows at a time share each load of an input plane (a quarter of the memory traffic;
    every sum still runs over the channels in order, so the results are unchanged)."""
    n_out, size = out.shape[0], out.shape[1]
    flat = out.reshape(-1)
    for o in range(n_out):
        flat[o * size:(o + 1) * size] = bias[o]
    o = 0
    while o + 4 <= n_out:
        a, b, c, d = (np.uint64(o * size), np.uint64((o + 1) * size),
                      np.uint64((o + 2) * size), np.uint64((o + 3) * size))
        for ch in range(x.shape[0]):
            wa, wb, wc, wd, src = w[o, ch], w[o + 1, ch], w[o + 2, ch], w[o + 3, ch], x[ch]
            for p in range(size):
                v, q = src[np.uint64(p)], np.uint64(p)
                flat[a + q] += wa * v
                flat[b + q] += wb * v
                flat[c + q] += wc * v
                flat[d + q] += wd * v
        o += 4
    for r in range(o, n_out):
        for ch in range(x.shape[0]):
            _axpy(out[r], w[r, ch], x[ch], 0, size)
    for i in range(flat.size):
        flat[np.uint64(i)] = min(max(flat[np.uint64(i)], amin), amax)
