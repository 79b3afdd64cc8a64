"""Spiking kernels: the neuron's charge → fire → reset step, and event-driven synapses.

A neuron's output is its spike times its threshold (the spike's amplitude), so that the rates
of a converted network equal the ANN's activations without rescaling the weights. The
event-driven layers skip every zero input: only elements that spiked (or, after an average
pool, carry a spike's share) propagate, each adding its weight row, scaled by its amplitude, to
the outputs it reaches. ``count[0]`` accumulates how many such additions (synaptic operations)
were made.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def neuron_step(x, threshold, v, leak, subtract, out):
    """One time step of IF (leak 1) or LIF neurons over a batch: x, v and out are (N, K),
    threshold is (K,); v is the state, kept between steps."""
    for n in range(x.shape[0]):
        for k in range(x.shape[1]):
            u = leak * v[n, k] + x[n, k]
            th = threshold[k]
            if u >= th:
                out[n, k] = th
                u = u - th if subtract else 0.0
            else:
                out[n, k] = 0.0
            v[n, k] = u


@njit(cache=True)
def event_conv2d(x, w, bias, rows, cols, acc, out, count):
    """Grouped convolution driven by input events: each non-zero input element scatters its
    taps into the outputs it reaches. ``w`` is laid out (C_in_per_group, KH, KW, O) and the
    sums build up in ``acc`` (OH, OW, O), so that the O // groups outputs one tap reaches are
    contiguous in both (a vector add); ``out`` (NCHW) gets them at the end. Each output still
    adds its terms in input order (c, y, x, ky, kx), the order the firmware's twin uses.
    ``rows``/``cols`` map an input row/column and a tap to the output row/column it reaches
    (``tap_targets``), so that no event pays a division per tap."""
    height, width = x.shape[2], x.shape[3]
    out_c, out_h, out_w = out.shape[1], out.shape[2], out.shape[3]
    per_group = w.shape[0]
    groups = x.shape[1] // per_group
    per_out = out_c // groups
    ops = 0
    for n in range(x.shape[0]):
        for oy in range(out_h):
            for ox in range(out_w):
                acc[oy, ox, :] = bias
        for c in range(x.shape[1]):
            g, ci = c // per_group, c % per_group
            o0 = g * per_out
            for iy in range(height):
                for ix in range(width):
                    value = x[n, c, iy, ix]
                    if value == 0.0:
                        continue
                    for ky in range(w.shape[1]):
                        oy = rows[iy, ky]
                        if oy < 0:
                            continue
                        for kx in range(w.shape[2]):
                            ox = cols[ix, kx]
                            if ox < 0:
                                continue
                            taps = w[ci, ky, kx, o0:o0 + per_out]
                            dst = acc[oy, ox, o0:o0 + per_out]
                            for o in range(per_out):
                                dst[o] += value * taps[o]
                            ops += per_out
        for o in range(out_c):
            for oy in range(out_h):
                for ox in range(out_w):
                    out[n, o, oy, ox] = acc[oy, ox, o]
    count[0] += ops


def tap_targets(size, taps, stride, pad, dilation, out_size):
    """``[i, k]``: the output position that input position i reaches through tap k, or -1."""
    table = np.full((size, taps), -1, np.int64)
    for i in range(size):
        for k in range(taps):
            j = i + pad - k * dilation
            if j >= 0 and j % stride == 0 and j // stride < out_size:
                table[i, k] = j // stride
    return table


@njit(cache=True)
def event_linear(x, w_t, bias, out, count):
    """``out = x @ w_t + bias`` adding one weight row (``w_t`` is (in, out)) per non-zero input."""
    ops = 0
    for n in range(x.shape[0]):
        out[n, :] = bias
        for k in range(x.shape[1]):
            value = x[n, k]
            if value != 0.0:
                row = w_t[k]
                for o in range(row.size):
                    out[n, o] += value * row[o]
                ops += row.size
    count[0] += ops


# --- int8 spiking Graphs (edgekit.quant.spiking): the event-driven layers above serve them as
# they are, accumulating int8 weights times int8 amplitudes (or int32 pool sums) into int32.

@njit(cache=True)
def int_neuron_step(x, threshold, v, leak, subtract, amplitude, out):
    """One time step of integer IF/LIF neurons: x, v (int32) and out (int8) are (N, K),
    threshold (int32) and amplitude (int8) are (K,). The membrane leaks by the Q15 multiplier
    ``leak`` (2^15 for IF: exact), the product truncated toward zero as ONNX's integer Div."""
    for n in range(x.shape[0]):
        for k in range(x.shape[1]):
            product = np.int64(v[n, k]) * leak
            kept = product // 32768
            if product < 0 and kept * 32768 != product:
                kept += 1
            u = kept + x[n, k]
            th = threshold[k]
            if u >= th:
                out[n, k] = amplitude[k]
                u = u - th if subtract else 0
            else:
                out[n, k] = 0
            v[n, k] = u


@njit(cache=True)
def scaled_add(spikes, multiplier, current, out):
    """A residual add of an int8 SNN, flat: ``spikes * multiplier + current`` in int32."""
    for i in range(out.size):
        out[i] = spikes[i] * multiplier + current[i]
