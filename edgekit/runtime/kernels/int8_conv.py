"""int8 convolutions, mostly channels-last inside: one sample's input is copied once into a padded
HWC buffer holding ``x - zero_point`` (int16), so padding is the real value 0 and every window
tap reads a contiguous run of channels without bounds tests.

- general convolution: each output pixel's window becomes a row (``window_rows``), multiplied
  with the weight rows in ``int8_gemm.gemm_requant``;
- pointwise (1x1, stride 1, one group): no padded copy at all; whole NCHW planes are
  accumulated per output channel (``pointwise``), the input zero point folded into the bias;
- one input channel per output channel at stride 1 (depthwise, and any convolution of a
  single input channel; ``depthwise_planes``): channel by channel on a padded plane, each tap
  one long contiguous multiply-add over the plane's rows at the padded width;
- the same at other strides: the accumulation runs over the channel vector of each pixel
  (``depthwise``); the padded input repeats each channel ``multiplier`` times so output
  channels stay contiguous.

numba's cache does not see edits to ``edgekit.quant.arith``: clear it after changing that file.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from edgekit.quant.arith import requantize


@njit(cache=True)
def pad_channels_last(x, zero_point, top, left, repeat, out):
    """``out[top + y, left + x, c * repeat + r] = x[c, y, x] - zero_point``; the rest 0."""
    out[:] = 0
    channels = out.shape[2]
    row_len, dst = out.shape[1] * channels, out.reshape(-1)
    for c in range(x.shape[0]):
        for y in range(x.shape[1]):
            src, base = x[c, y], (top + y) * row_len + left * channels + c * repeat
            for i in range(x.shape[2]):
                v, at = src[i] - zero_point, base + i * channels
                for r in range(repeat):
                    dst[np.uint64(at + r)] = v


@njit(cache=True, inline="always")
def _copy(dst, at, src, start, n):
    """``dst[at:at + n] = src[start:start + n]`` on flat arrays; unsigned indices spare numba's
    negative-index checks, so the loop compiles to a plain vectorized copy (10x faster)."""
    for i in range(n):
        dst[np.uint64(at + i)] = src[np.uint64(start + i)]


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
def depthwise(xpad, taps, bias, stride, dilation, multiplier, shift, zero_point, lo, hi,
              acc, acc_t, out):
    """Output channel o from padded channel o, requantized per channel into ``out``
    (O, OH, OW). ``taps`` (KH, KW, OW * O) and ``bias`` (OW * O) are the weights and biases
    tiled along an output row, so with stride 1 each tap is one long contiguous multiply-add
    over the row's ``acc`` (OW * O int32); ``acc_t`` (O, OW) turns the row channel-major for a
    per-channel requantization loop that vectorizes."""
    kh, kw = taps.shape[0], taps.shape[1]
    channels, out_w = out.shape[0], out.shape[2]
    (sh, sw), (dh, dw) = stride, dilation
    n = out_w * channels
    for oy in range(out.shape[1]):
        acc[:] = bias
        for ky in range(kh):
            src = xpad[oy * sh + ky * dh].reshape(-1)
            for kx in range(kw):
                tap = taps[ky, kx]
                if sw == 1:
                    seg = src[kx * dw * channels:kx * dw * channels + n]
                    for i in range(n):
                        acc[i] = np.int32(acc[i] + np.int32(tap[i]) * np.int32(seg[i]))
                else:
                    for ox in range(out_w):
                        pixel = src[(ox * sw + kx * dw) * channels:]
                        sums, weights = acc[ox * channels:], tap[ox * channels:]
                        for o in range(channels):
                            sums[o] = np.int32(sums[o] + np.int32(weights[o])
                                               * np.int32(pixel[o]))
        for ox in range(out_w):
            for o in range(channels):
                acc_t[o, ox] = acc[ox * channels + o]
        for o in range(channels):
            m, s, src_o, dst = multiplier[o], shift[o], acc_t[o], out[o, oy]
            for ox in range(out_w):
                dst[ox] = requantize(src_o[ox], m, s, zero_point, lo, hi)


@njit(cache=True)
def pointwise(x, weights, bias, multiplier, shift, zero_point, lo, hi, acc, out):
    """``out[o] = requantize(bias[o] + sum_c weights[o, c] * x[c])`` on one sample's planes,
    ``x`` (C, P) and ``out`` (O, P): each weight scales a contiguous input plane into the int32
    row ``acc`` (P), a loop LLVM vectorizes; ``bias`` already holds ``- zp_in * sum_c w[o, c]``."""
    for o in range(out.shape[0]):
        acc[:] = bias[o]
        for c in range(x.shape[0]):
            w, src = np.int32(weights[o, c]), x[c]
            for p in range(acc.size):
                acc[p] = np.int32(acc[p] + w * np.int32(src[p]))
        m, s, dst = multiplier[o], shift[o], out[o]
        for p in range(acc.size):
            dst[p] = requantize(acc[p], m, s, zero_point, lo, hi)


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
        if o % repeat == 0:
            for y in range(x.shape[1]):
                src, base = x[o // repeat, y], (top + y) * pw + left
                for i in range(x.shape[2]):
                    plane[np.uint64(base + i)] = src[i] - zero_point_in
        acc[:] = bias[o]
        for ky in range(taps.shape[1]):
            for kx in range(taps.shape[2]):
                w, start = taps[o, ky, kx], ky * dh * pw + kx * dw
                seg = plane[start:start + n]
                for i in range(n):
                    acc[i] = np.int32(acc[i] + w * np.int32(seg[i]))
        m, s = multiplier[o], shift[o]
        for oy in range(out.shape[1]):
            row, dst = acc[oy * pw:], out[o, oy]
            for ox in range(out.shape[2]):
                dst[ox] = requantize(row[ox], m, s, zero_point, lo, hi)
