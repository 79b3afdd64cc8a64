"""int8 convolutions. Inputs are copied once into padded buffers holding ``x - zero_point``
(int16), so padding is the real value 0 and no tap needs a bounds test.

- general convolution: the padded copy is channels-last (HWC), each output pixel's window
  becomes a row (``window_rows``), multiplied with the weight rows in
  ``int8_gemm.gemm_requant``;
- pointwise (1x1, stride 1, one group): no padded copy at all; whole NCHW planes are
  accumulated four output channels at a time (``pointwise``), the input zero point folded
  into the bias;
- one input channel per output channel at stride 1 (depthwise, and any convolution of a
  single input channel; ``depthwise_planes``): channel by channel on a padded plane, each tap
  one long contiguous multiply-add over the plane's rows at the padded width;
- the same at other strides (``strided_depthwise``): the padded plane split by stride phase,
  so that each tap is again one contiguous multiply-add.

numba's cache does not see edits to ``edgekit.numerics.arith``: clear it after changing that file.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from edgekit.numerics.arith import requantize


@njit(cache=True)
def pad_channels_last(x, zero_point, top, left, out):
    """``out[top + y, left + x, c] = x[c, y, x] - zero_point``; the rest 0."""
    out[:] = 0
    channels = out.shape[2]
    row_len, dst = out.shape[1] * channels, out.reshape(-1)
    for c in range(x.shape[0]):
        for y in range(x.shape[1]):
            src, base = x[c, y], (top + y) * row_len + left * channels + c
            for i in range(x.shape[2]):
                dst[np.uint64(base + i * channels)] = src[i] - zero_point


@njit(cache=True, inline="always")
def _copy(dst, at, src, start, n):
    """``dst[at:at + n] = src[start:start + n]`` on flat arrays; unsigned indices spare numba's
    negative-index checks, so the loop compiles to a plain vectorized copy (10x faster)."""
    for i in range(n):
        dst[np.uint64(at + i)] = src[np.uint64(start + i)]


@njit(cache=True, inline="always")
def _mac(acc, w, src, start, n):
    """``acc[:n] += w * src[start:start + n]`` in int32 on flat arrays, with ``_copy``'s
    unsigned indices so that the loop vectorizes; the same sums as on slices."""
    for i in range(n):
        acc[np.uint64(i)] = np.int32(acc[np.uint64(i)] + w * np.int32(src[np.uint64(start + i)]))


@njit(cache=True, inline="always")
def _mac4(acc, size, w, src, start, n):
    """``_mac`` for four output channels reading the same input (``w`` their four taps), their
    sums ``size`` apart in ``acc``: each input value loaded once for the four."""
    wa, wb, wc, wd = np.int32(w[0]), np.int32(w[1]), np.int32(w[2]), np.int32(w[3])
    b, c, d = np.uint64(size), np.uint64(2 * size), np.uint64(3 * size)
    for i in range(n):
        q = np.uint64(i)
        v = np.int32(src[np.uint64(start + i)])
        acc[q] = np.int32(acc[q] + wa * v)
        acc[b + q] = np.int32(acc[b + q] + wb * v)
        acc[c + q] = np.int32(acc[c + q] + wc * v)
        acc[d + q] = np.int32(acc[d + q] + wd * v)


@njit(cache=True)
def window_rows(xpad, kernel, stride, dilation, first, channels, out_w, rows):
    """``rows[p]`` = the window of output pixel p over channels ``first .. first + channels``
    of the padded HWC input, ordered (ky, kx, channel) like the reordered weights: one
    contiguous copy per window row when the window's taps are adjacent and take every channel,
    else one per tap."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    width, row_len, depth = xpad.shape[2], xpad.shape[1] * xpad.shape[2], rows.shape[1]
    whole = dw == 1 and channels == width
    run = kw * width if whole else channels
    src, dst = xpad.reshape(-1), rows.reshape(-1)
    for p in range(rows.shape[0]):
        oy, ox = p // out_w, p % out_w
        k = p * depth
        for ky in range(kh):
            base = (oy * sh + ky * dh) * row_len + first
            for kx in range(1 if whole else kw):
                _copy(dst, k, src, base + (ox * sw + kx * dw) * width, run)
                k += run


@njit(cache=True)
def pointwise(x, weights, bias, multiplier, shift, zero_point, lo, hi, acc, out):
    """``out[o] = requantize(bias[o] + sum_c weights[o, c] * x[c])`` on one sample's planes,
    ``x`` (C, P) and ``out`` (O, P): each weight scales a contiguous input plane into int32
    sums, a loop LLVM vectorizes; ``bias`` already holds ``- zp_in * sum_c w[o, c]``. ``acc``
    (4 * P) holds the sums of four output rows, which share each load of an input plane (a
    quarter of the memory traffic; integer sums, so the results are those of one row at a
    time)."""
    n_out, size = out.shape[0], x.shape[1]
    o = 0
    while o < n_out:
        rows = min(4, n_out - o)
        for r in range(rows):
            for p in range(size):
                acc[np.uint64(r * size + p)] = bias[o + r]
        if rows == 4:
            b, c, d = np.uint64(size), np.uint64(2 * size), np.uint64(3 * size)
            for ch in range(x.shape[0]):
                wa, wb = np.int32(weights[o, ch]), np.int32(weights[o + 1, ch])
                wc, wd, src = np.int32(weights[o + 2, ch]), np.int32(weights[o + 3, ch]), x[ch]
                for p in range(size):
                    q = np.uint64(p)
                    v = np.int32(src[q])
                    acc[q] = np.int32(acc[q] + wa * v)
                    acc[b + q] = np.int32(acc[b + q] + wb * v)
                    acc[c + q] = np.int32(acc[c + q] + wc * v)
                    acc[d + q] = np.int32(acc[d + q] + wd * v)
        else:
            for r in range(rows):
                row = acc[r * size:(r + 1) * size]
                for ch in range(x.shape[0]):
                    _mac(row, np.int32(weights[o + r, ch]), x[ch], 0, size)
        for r in range(rows):
            m, s, dst = multiplier[o + r], shift[o + r], out[o + r]
            for p in range(size):
                dst[np.uint64(p)] = requantize(acc[np.uint64(r * size + p)], m, s, zero_point,
                                               lo, hi)
        o += rows


@njit(cache=True)
def depthwise_planes(x, zero_point_in, top, left, taps, bias, dilation, multiplier, shift,
                     zero_point, lo, hi, plane, acc, out):
    """Stride-1 convolution of one NCHW sample with one input channel per output channel,
    ``x`` (C, H, W) -> ``out`` (O, OH, OW), output channel o reading input channel
    ``o // (O // C)``; ``taps`` (O, KH, KW) int32. Each input channel is copied less its zero
    point into ``plane``, the padded (PH, PW) image flattened (its border stays 0); the sums
    are kept at the padded width, ``acc[oy * PW + ox]``, so that every tap is a single
    contiguous multiply-add of ``OH * PW - (KW - 1) * dw`` values (the columns past OW are
    never read back)."""
    (dh, dw), pw = dilation, acc.size // out.shape[1]
    n = out.shape[1] * pw - (taps.shape[2] - 1) * dw
    repeat = out.shape[0] // x.shape[0]
    plane[:] = 0
    for o in range(out.shape[0]):
        if o % repeat == 0:  # element loops, unsigned indices: no slice views per row
            for y in range(x.shape[1]):
                src, base = x[o // repeat, y], (top + y) * pw + left
                for i in range(x.shape[2]):
                    plane[np.uint64(base + i)] = src[np.uint64(i)] - zero_point_in
        for i in range(acc.size):
            acc[np.uint64(i)] = bias[o]
        for ky in range(taps.shape[1]):
            for kx in range(taps.shape[2]):
                _mac(acc, taps[o, ky, kx], plane, ky * dh * pw + kx * dw, n)
        m, s = multiplier[o], shift[o]
        for oy in range(out.shape[1]):
            dst = out[o, oy]
            for ox in range(out.shape[2]):
                dst[np.uint64(ox)] = requantize(acc[np.uint64(oy * pw + ox)], m, s, zero_point,
                                                lo, hi)


@njit(cache=True)
def strided_depthwise(x, zero_point_in, top, left, taps, bias, stride, dilation, multiplier,
                     shift, zero_point, lo, hi, phases, acc, out):
    """``depthwise_planes`` at any stride: ``x`` (C, H, W) -> ``out`` (O, OH, OW), output
    channel o reading input channel ``o // (O // C)``; ``taps`` (O, KH, KW) int32.

    Each input channel is copied less its zero point into ``phases`` (SH * SW, QH, QW), the
    zero-padded plane split by stride phase: padded pixel (r, c) goes to phase
    ``(r % SH) * SW + c % SW`` at (r // SH, c // SW), so every tap of every output reads one
    phase at the output's own (oy, ox) plus a fixed offset. The sums are kept at the phase
    width, ``acc[oy * QW + ox]``, making each tap a single contiguous multiply-add of
    ``(OH - 1) * QW + OW`` values (the columns past OW are never read back). When ``acc``
    holds four planes of sums (``OH * QW`` each; the caller gives them when each input channel
    feeds a multiple of 4 output channels, as in a first layer of one input channel), four
    output channels are summed at once, each input value loaded once for the four."""
    (sh, sw), (dh, dw), (qh, qw) = stride, dilation, phases.shape[1:]
    out_h, out_w = out.shape[1], out.shape[2]
    n, size = (out_h - 1) * qw + out_w, out_h * qw
    repeat, flat = out.shape[0] // x.shape[0], phases.reshape(-1)
    group = acc.size // size  # output channels summed at once: 4 or 1 (see _mac4)
    rows, cols = min(x.shape[1], qh * sh - top), min(x.shape[2], qw * sw - left)
    flat[:] = 0
    for o0 in range(0, out.shape[0], group):
        if o0 % repeat == 0:
            qr, py = divmod(top, sh)
            for y in range(rows):
                src = x[o0 // repeat, y]
                for px in range(sw):
                    first = (px - left) % sw
                    dst = phases[py * sw + px, qr, (left + first) // sw:]
                    for k in range((cols - first + sw - 1) // sw):
                        dst[k] = src[first + k * sw] - zero_point_in
                py += 1
                if py == sh:  # divmod(top + y, sh) without a division per row
                    qr, py = qr + 1, 0
        for r in range(group):
            for i in range(size):
                acc[np.uint64(r * size + i)] = bias[o0 + r]
        for ky in range(taps.shape[1]):
            for kx in range(taps.shape[2]):
                (qy, py), (qx, px) = divmod(ky * dh, sh), divmod(kx * dw, sw)
                start = ((py * sw + px) * qh + qy) * qw + qx
                if group == 4:
                    _mac4(acc, size, taps[o0:o0 + 4, ky, kx], flat, start, n)
                else:
                    _mac(acc, taps[o0, ky, kx], flat, start, n)
        for r in range(group):  # no slice views per row (as in depthwise_planes)
            o = o0 + r
            m, s = multiplier[o], shift[o]
            for oy in range(out_h):
                dst = out[o, oy]
                for ox in range(out_w):
                    dst[np.uint64(ox)] = requantize(acc[np.uint64(r * size + oy * qw + ox)], m,
                                                    s, zero_point, lo, hi)
