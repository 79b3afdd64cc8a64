"""numba kernels for training: the backward passes, local losses and weight updates.

Forward passes reuse the inference runtime's kernels (``im2row`` + ``gemm_nt`` for conv and
linear, ``avg_pool2d`` for average pooling); only max pooling is new here, because training must
remember which tap won. Every kernel writes into buffers it is given and allocates nothing, so
what a rule keeps alive is decided by its caller and can be accounted for.

Activation derivatives are taken from the activation's *output* (relu: y > 0, relu6: 0 < y < 6,
leaky: 1 or alpha by the sign of y), so no pre-activation has to be kept; and since these
activations are monotone, the derivative at a max-pool's winning tap is the one at the pooled
output, so a conv-act-maxpool block keeps only its pooled output and the winners' offsets.

Kernels call only kernels of this module (numba's disk cache tracks a function's own file).
"""

from __future__ import annotations

import numpy as np
from numba import njit

ACT_CODES = {"none": 0, "relu": 1, "relu6": 2, "leaky_relu": 3}


@njit(cache=True)
def act_grad(y, dy, kind, alpha, out):
    """``out = dy * f'(.)`` with the derivative read from the activation output ``y`` (flat)."""
    for i in range(y.size):
        v = y[i]
        if kind == 1:
            d = 1.0 if v > 0 else 0.0
        elif kind == 2:
            d = 1.0 if 0 < v < 6 else 0.0
        elif kind == 3:
            d = 1.0 if v > 0 else alpha
        else:
            d = 1.0
        out[i] = dy[i] * d


@njit(cache=True)
def maxpool_argmax(x, kernel, stride, padding, out, idx):
    """Max pooling of one CHW sample; ``idx`` (uint8) keeps the winning tap ``ky * kw + kx``.

    The first maximum in scan order wins, as in torch, so gradients land on the same tap."""
    (kh, kw), (sh, sw), (pt, pl) = kernel, stride, padding
    for c in range(x.shape[0]):
        for oy in range(out.shape[1]):
            for ox in range(out.shape[2]):
                best, tap = -np.inf, 0
                for ky in range(kh):
                    iy = oy * sh - pt + ky
                    if 0 <= iy < x.shape[1]:
                        for kx in range(kw):
                            ix = ox * sw - pl + kx
                            if 0 <= ix < x.shape[2] and x[c, iy, ix] > best:
                                best, tap = x[c, iy, ix], ky * kw + kx
                out[c, oy, ox] = best
                idx[c, oy, ox] = tap


@njit(cache=True)
def maxpool_backward(dy, idx, kernel, stride, padding, dx):
    """Route each pooled gradient to its winning tap (overlapping windows accumulate)."""
    kw = kernel[1]
    (sh, sw), (pt, pl) = stride, padding
    dx[:] = 0.0
    for c in range(dy.shape[0]):
        for oy in range(dy.shape[1]):
            for ox in range(dy.shape[2]):
                t = idx[c, oy, ox]
                dx[c, oy * sh - pt + t // kw, ox * sw - pl + t % kw] += dy[c, oy, ox]


@njit(cache=True)
def avgpool_backward(dy, kernel, stride, padding, count_include_pad, dx):
    """Spread each pooled gradient evenly over its window (torch's divisor rules)."""
    (kh, kw), (sh, sw), (pt, pl) = kernel, stride, padding
    height, width = dx.shape[1], dx.shape[2]
    dx[:] = 0.0
    for c in range(dy.shape[0]):
        for oy in range(dy.shape[1]):
            for ox in range(dy.shape[2]):
                y0, x0 = oy * sh - pt, ox * sw - pl
                y1, x1 = min(y0 + kh, height), min(x0 + kw, width)
                y0, x0 = max(y0, 0), max(x0, 0)
                count = kh * kw if count_include_pad else (y1 - y0) * (x1 - x0)
                g = dy[c, oy, ox] / count
                for iy in range(y0, y1):
                    for ix in range(x0, x1):
                        dx[c, iy, ix] += g


@njit(cache=True)
def matmul_acc(a, b, out):
    """``out += a @ b``; the inner loop runs along rows of ``b`` and ``out`` so it vectorizes."""
    for i in range(a.shape[0]):
        for k in range(a.shape[1]):
            s = a[i, k]
            if s != 0.0:
                for j in range(b.shape[1]):
                    out[i, j] += s * b[k, j]


@njit(cache=True)
def row_sum_acc(a, out):
    """``out += a.sum(axis=1)`` (bias gradients of a conv: sum over output pixels)."""
    for i in range(a.shape[0]):
        total = 0.0
        for j in range(a.shape[1]):
            total += a[i, j]
        out[i] += total


@njit(cache=True)
def moments_acc(z, sums):
    """``sums[0] += z.sum(axis=1)``, ``sums[1] += (z * z).sum(axis=1)`` in float64 (channels
    are rows): the running-statistics normalisation's batch moments."""
    for i in range(z.shape[0]):
        s1 = s2 = 0.0
        for j in range(z.shape[1]):
            v = z[i, j]
            s1 += v
            s2 += v * v
        sums[0, i] += s1
        sums[1, i] += s2


@njit(cache=True)
def row2im(drows, kernel, stride, padding, dilation, out_w, dx):
    """The adjoint of ``im2row`` (one group): add each window row back onto the input taps."""
    height, width = dx.shape[1], dx.shape[2]
    (kh, kw), (sh, sw), (pt, pl), (dh, dw) = kernel, stride, padding, dilation
    dx[:] = 0.0
    for p in range(drows.shape[0]):
        oy, ox = p // out_w, p % out_w
        for ci in range(dx.shape[0]):
            for ky in range(kh):
                iy = oy * sh - pt + ky * dh
                if 0 <= iy < height:
                    for kx in range(kw):
                        ix = ox * sw - pl + kx * dw
                        if 0 <= ix < width:
                            dx[ci, iy, ix] += drows[p, (ci * kh + ky) * kw + kx]


@njit(cache=True)
def grouped_conv(x, w, bias, stride, padding, dilation, out):
    """A grouped convolution of one CHW sample, ``w`` (O, C / G, KH, KW): depthwise when
    C / G = 1. Direct loops: with one input channel per group a window has too few taps for
    im2row and a product to pay (the groups-1 path). Taps in the padding are skipped; the
    output's size sets how far the windows run (so bottom/right padding needs no argument)."""
    per_group, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    per_out = out.shape[0] // (x.shape[0] // per_group)
    (sh, sw), (pt, pl), (dh, dw) = stride, padding, dilation
    for o in range(out.shape[0]):
        out[o] = bias[o]
        first = (o // per_out) * per_group
        for ci in range(per_group):
            plane = x[first + ci]
            for ky in range(kh):
                for kx in range(kw):
                    scale = w[o, ci, ky, kx]
                    for oy in range(out.shape[1]):
                        iy = oy * sh - pt + ky * dh
                        if 0 <= iy < plane.shape[0]:
                            for ox in range(out.shape[2]):
                                ix = ox * sw - pl + kx * dw
                                if 0 <= ix < plane.shape[1]:
                                    out[o, oy, ox] += scale * plane[iy, ix]


@njit(cache=True)
def grouped_conv_dw(x, dz, stride, padding, dilation, dw_out):
    """``dw_out += dL/dw`` of ``grouped_conv`` for one sample's ``dz`` (dL/d output)."""
    per_group, kh, kw = dw_out.shape[1], dw_out.shape[2], dw_out.shape[3]
    per_out = dz.shape[0] // (x.shape[0] // per_group)
    (sh, sw), (pt, pl), (dh, dw) = stride, padding, dilation
    for o in range(dz.shape[0]):
        first = (o // per_out) * per_group
        for ci in range(per_group):
            plane = x[first + ci]
            for ky in range(kh):
                for kx in range(kw):
                    total = 0.0
                    for oy in range(dz.shape[1]):
                        iy = oy * sh - pt + ky * dh
                        if 0 <= iy < plane.shape[0]:
                            for ox in range(dz.shape[2]):
                                ix = ox * sw - pl + kx * dw
                                if 0 <= ix < plane.shape[1]:
                                    total += dz[o, oy, ox] * plane[iy, ix]
                    dw_out[o, ci, ky, kx] += total


@njit(cache=True)
def grouped_conv_dx(dz, w, stride, padding, dilation, dx):
    """``dx = dL/d input`` of ``grouped_conv`` for one sample's ``dz`` (overwritten)."""
    per_group, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    per_out = dz.shape[0] // (dx.shape[0] // per_group)
    (sh, sw), (pt, pl), (dh, dw) = stride, padding, dilation
    dx[:] = 0.0
    for o in range(dz.shape[0]):
        first = (o // per_out) * per_group
        for ci in range(per_group):
            plane = dx[first + ci]
            for ky in range(kh):
                for kx in range(kw):
                    scale = w[o, ci, ky, kx]
                    for oy in range(dz.shape[1]):
                        iy = oy * sh - pt + ky * dh
                        if 0 <= iy < plane.shape[0]:
                            for ox in range(dz.shape[2]):
                                ix = ox * sw - pl + kx * dw
                                if 0 <= ix < plane.shape[1]:
                                    plane[iy, ix] += scale * dz[o, oy, ox]


@njit(cache=True)
def adaptive_avgpool(x, out):
    """torch's adaptive average pooling of ``(planes, H, W)`` to ``out`` ``(planes, P, Q)``."""
    height, width = x.shape[1], x.shape[2]
    for c in range(x.shape[0]):
        for i in range(out.shape[1]):
            y0, y1 = i * height // out.shape[1], -(-(i + 1) * height // out.shape[1])
            for j in range(out.shape[2]):
                x0, x1 = j * width // out.shape[2], -(-(j + 1) * width // out.shape[2])
                total = 0.0
                for iy in range(y0, y1):
                    for ix in range(x0, x1):
                        total += x[c, iy, ix]
                out[c, i, j] = total / ((y1 - y0) * (x1 - x0))


@njit(cache=True)
def adaptive_avgpool_backward(dy, dx):
    """The adjoint of ``adaptive_avgpool``."""
    height, width = dx.shape[1], dx.shape[2]
    dx[:] = 0.0
    for c in range(dx.shape[0]):
        for i in range(dy.shape[1]):
            y0, y1 = i * height // dy.shape[1], -(-(i + 1) * height // dy.shape[1])
            for j in range(dy.shape[2]):
                x0, x1 = j * width // dy.shape[2], -(-(j + 1) * width // dy.shape[2])
                g = dy[c, i, j] / ((y1 - y0) * (x1 - x0))
                for iy in range(y0, y1):
                    for ix in range(x0, x1):
                        dx[c, iy, ix] += g


@njit(cache=True)
def softmax_xent(logits, labels, scale, dlogits):
    """Mean cross-entropy of ``logits * scale``; ``dlogits`` gets its gradient w.r.t. ``logits``.

    Returns the loss. ``scale`` is 1/T for LLS's temperature; 1 for an ordinary classifier."""
    batch, classes = logits.shape
    loss = 0.0
    for n in range(batch):
        peak = logits[n, 0] * scale
        for k in range(1, classes):
            peak = max(peak, logits[n, k] * scale)
        total = 0.0
        for k in range(classes):
            total += np.exp(logits[n, k] * scale - peak)
        loss += np.log(total) + peak - logits[n, labels[n]] * scale
        for k in range(classes):
            p = np.exp(logits[n, k] * scale - peak) / total
            dlogits[n, k] = (p - (1.0 if k == labels[n] else 0.0)) * scale / batch
    return loss / batch


@njit(cache=True)
def lls_sample_loss(h, label, bases, inv_t, mode, mod, weight, lat, du, scores, dh, dmod):
    """LLS's local loss of one sample's block output ``h`` ``(planes, H, W)``; returns the loss
    times ``weight`` and writes ``dh`` (dL/dh) and adds into ``dmod``.

    ``lat`` ``(planes, P, Q)`` sets the adaptive pooling, ``du`` is scratch of the same size,
    ``scores`` scratch ``(3, classes)``. ``mode`` 0: logits = s = (lat / |lat|) @ bases.T;
    1 (LLS-M): s * mod[0]; 2 (LLS-MxM): s @ mod. Cross-entropy at ``inv_t`` = 1/T."""
    classes, width = bases.shape
    adaptive_avgpool(h, lat)
    u, g = lat.reshape(-1), du.reshape(-1)
    norm = 0.0
    for d in range(width):
        norm += u[d] * u[d]
    norm = max(np.sqrt(norm), 1e-12)
    for d in range(width):
        u[d] /= norm
    s, logits, dl = scores[0], scores[1], scores[2]
    for k in range(classes):
        total = 0.0
        for d in range(width):
            total += u[d] * bases[k, d]
        s[k] = total
    for k in range(classes):
        if mode == 0:
            logits[k] = s[k]
        elif mode == 1:
            logits[k] = s[k] * mod[0, k]
        else:
            total = 0.0
            for j in range(classes):
                total += s[j] * mod[j, k]
            logits[k] = total
    peak = logits[0] * inv_t
    for k in range(1, classes):
        peak = max(peak, logits[k] * inv_t)
    total = 0.0
    for k in range(classes):
        total += np.exp(logits[k] * inv_t - peak)
    loss = np.log(total) + peak - logits[label] * inv_t
    for k in range(classes):
        p = np.exp(logits[k] * inv_t - peak) / total
        dl[k] = (p - (1.0 if k == label else 0.0)) * inv_t * weight
    for k in range(classes):  # dl becomes dL/ds
        if mode == 1:
            dmod[0, k] += dl[k] * s[k]
            dl[k] *= mod[0, k]
        elif mode == 2:
            for j in range(classes):
                dmod[j, k] += s[j] * dl[k]
    if mode == 2:
        for j in range(classes):
            total = 0.0
            for k in range(classes):
                total += dl[k] * mod[j, k]
            s[j] = total
        dl[:] = s
    dot = 0.0
    for d in range(width):
        total = 0.0
        for k in range(classes):
            total += dl[k] * bases[k, d]
        g[d] = total
        dot += u[d] * total
    for d in range(width):
        g[d] = (g[d] - u[d] * dot) / norm
    adaptive_avgpool_backward(du, dh)
    return loss * weight


@njit(cache=True)
def goodness_loss(h, theta, dh):
    """Forward-forward: the first half of the batch is positive data, the second negative.

    Goodness ``g = mean(h^2)`` per sample; loss ``softplus(theta - g)`` for positives and
    ``softplus(g - theta)`` for negatives, averaged over pairs; ``dh`` gets its gradient."""
    pairs, width = h.shape[0] // 2, h.shape[1]
    loss = 0.0
    for n in range(h.shape[0]):
        g = 0.0
        for i in range(width):
            g += h[n, i] * h[n, i]
        g /= width
        z = theta - g if n < pairs else g - theta
        loss += max(z, 0.0) + np.log1p(np.exp(-abs(z)))
        sig = 1.0 / (1.0 + np.exp(-z))
        sign = -1.0 if n < pairs else 1.0
        for i in range(width):
            dh[n, i] = sign * sig * 2.0 * h[n, i] / width / pairs
    return loss / pairs


@njit(cache=True)
def group_goodness_loss(h, labels, group, sizes, dh):
    """Channel-wise competitive forward-forward: feature ``f`` of a sample belongs to class
    ``group[f]``; class k's goodness is ``G_k = mean(h^2)`` over its ``sizes[k]`` features, and the
    loss is the mean cross-entropy of the goodnesses as logits. ``dh`` gets its gradient."""
    batch, width = h.shape
    classes = sizes.shape[0]
    g = np.empty(classes)
    loss = 0.0
    for n in range(batch):
        g[:] = 0.0
        for f in range(width):
            g[group[f]] += h[n, f] * h[n, f]
        for k in range(classes):
            g[k] /= sizes[k]
        peak = g.max()
        total = 0.0
        for k in range(classes):
            total += np.exp(g[k] - peak)
        loss += np.log(total) + peak - g[labels[n]]
        for k in range(classes):
            g[k] = (np.exp(g[k] - peak) / total - (1.0 if k == labels[n] else 0.0)) / (
                sizes[k] * batch)
        for f in range(width):
            dh[n, f] = g[group[f]] * 2.0 * h[n, f]
    return loss / batch


@njit(cache=True)
def group_goodness(h, group, sizes, out):
    """``out[n, k] += G_k``: each class's goodness (``group_goodness_loss``), summed over
    layers."""
    for n in range(h.shape[0]):
        for f in range(h.shape[1]):
            out[n, group[f]] += h[n, f] * h[n, f] / sizes[group[f]]


@njit(cache=True)
def goodness(h, out):
    """``out[n] += mean(h[n]^2)``: forward-forward's per-sample goodness, summed over layers."""
    for n in range(h.shape[0]):
        total = 0.0
        for i in range(h.shape[1]):
            total += h[n, i] * h[n, i]
        out[n] += total / h.shape[1]


@njit(cache=True)
def pack_rows(v, codes, lo, step):
    """8-bit codes of each row of ``v`` ``(rows, cols)`` over the row's own range:
    ``v ~= lo + code * step`` (dual activation precision); writes ``codes``, ``lo``, ``step``.
    Only the row's minimum gets code 0, so a ReLU output's zeros, and only they, read back as
    zeros (its derivative mask stays exact)."""
    for r in range(v.shape[0]):
        a, b = v[r, 0], v[r, 0]
        for c in range(v.shape[1]):
            a, b = min(a, v[r, c]), max(b, v[r, c])
        s = (b - a) / 255.0 if b > a else 1.0
        lo[r], step[r] = a, s
        for c in range(v.shape[1]):
            q = min(255.0, max(0.0, np.rint((v[r, c] - a) / s)))
            codes[r, c] = np.uint8(1.0 if q == 0.0 and v[r, c] > a else q)


@njit(cache=True)
def unpack_rows(codes, lo, step, out):
    """``out = lo + codes * step`` row by row (``pack_rows`` undone)."""
    for r in range(codes.shape[0]):
        for c in range(codes.shape[1]):
            out[r, c] = lo[r] + codes[r, c] * step[r]


@njit(cache=True)
def adam(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """One AdamW step on flat arrays (torch's bias correction; decoupled weight decay)."""
    c1 = 1.0 - beta1 ** step
    c2 = np.sqrt(1.0 - beta2 ** step)
    for i in range(param.size):
        g = grad[i]
        m[i] = beta1 * m[i] + (1.0 - beta1) * g
        v[i] = beta2 * v[i] + (1.0 - beta2) * g * g
        param[i] -= lr * (weight_decay * param[i] + (m[i] / c1) / (np.sqrt(v[i]) / c2 + eps))


@njit(cache=True)
def sgd(param, grad, lr, weight_decay):
    """One plain SGD step on flat arrays (the smallest state an online device can keep)."""
    for i in range(param.size):
        param[i] -= lr * (grad[i] + weight_decay * param[i])
