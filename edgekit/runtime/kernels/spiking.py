"""Spiking kernels: the neuron's charge → fire → reset step, and event-driven synapses.

A neuron's output is its spike times its threshold (the spike's amplitude), so that the rates
of a converted network equal the ANN's activations without rescaling the weights. The
event-driven layers skip every zero input: only elements that spiked (or, after an average
pool, carry a spike's share) propagate, each adding its weight row, scaled by its amplitude, to
the outputs it reaches. ``count[0]`` accumulates how many such additions (synaptic operations)
were made.
"""

from __future__ import annotations

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
def event_conv2d(x, w, bias, stride, padding, dilation, out, count):
    """Grouped convolution driven by input events: each non-zero input element scatters its
    taps into the outputs it reaches. ``w`` is laid out (C_in_per_group, KH, KW, O) so that the
    O // groups outputs one tap reaches are contiguous."""
    height, width = x.shape[2], x.shape[3]
    out_c, out_h, out_w = out.shape[1], out.shape[2], out.shape[3]
    (sh, sw), (pt, pl), (dh, dw) = stride, padding, dilation
    per_group = w.shape[0]
    groups = x.shape[1] // per_group
    per_out = out_c // groups
    ops = 0
    for n in range(x.shape[0]):
        for o in range(out_c):
            out[n, o, :, :] = bias[o]
        for c in range(x.shape[1]):
            g, ci = c // per_group, c % per_group
            o0 = g * per_out
            for iy in range(height):
                for ix in range(width):
                    value = x[n, c, iy, ix]
                    if value == 0.0:
                        continue
                    for ky in range(w.shape[1]):
                        ny = iy + pt - ky * dh
                        if ny < 0 or ny % sh != 0 or ny // sh >= out_h:
                            continue
                        oy = ny // sh
                        for kx in range(w.shape[2]):
                            nx = ix + pl - kx * dw
                            if nx < 0 or nx % sw != 0 or nx // sw >= out_w:
                                continue
                            ox = nx // sw
                            taps = w[ci, ky, kx]
                            for o in range(per_out):
                                out[n, o0 + o, oy, ox] += value * taps[o0 + o]
                            ops += per_out
    count[0] += ops


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
