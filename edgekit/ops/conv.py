"""Convolutions: conv2d (depthwise when groups == channels) and conv1d, NC[H]W, OI[H]W weights."""

from __future__ import annotations

import numpy as np

from edgekit.ops import declare
from edgekit.ops.schema import OpDef, fail, prod, window_out
from edgekit.ops.util import finish, windows


def _check(x, w, b, groups, nd):
    if len(x) != nd + 2 or len(w) != nd + 2:
        fail(f"conv{nd}d expects rank-{nd + 2} input and weight, got {x} and {w}")
    if groups < 1 or x[1] % groups or w[0] % groups:
        fail(f"groups={groups} must divide input channels {x[1]} and output channels {w[0]}")
    if w[1] * groups != x[1]:
        fail(f"weight {w} expects {w[1] * groups} input channels, input has {x[1]}")
    if b is not None and tuple(b) != (w[0],):
        fail(f"bias shape {b} does not match {w[0]} output channels")


def _conv_macs(i, o, a) -> int:
    return prod(o) * prod(i[1][1:])


def _conv2d_shape(s, a):
    x, w = s[0], s[1]
    _check(x, w, s[2] if len(s) > 2 else None, a["groups"], 2)
    pt, pl, pb, pr = a["padding"]
    oh = window_out(x[2], w[2], a["stride"][0], pt + pb, a["dilation"][0])
    ow = window_out(x[3], w[3], a["stride"][1], pl + pr, a["dilation"][1])
    return (x[0], w[0], oh, ow)


def _conv2d_reference(x, w, b=None, *, stride, padding, dilation, groups, activation):
    o, per_group, kh, kw = w.shape
    win = windows(x, (kh, kw), stride, padding, dilation, 0.0)  # N, C, OH, OW, K
    n, _, oh, ow, k = win.shape
    win = win.reshape(n, groups, per_group, oh, ow, k)
    wg = w.astype(np.float64).reshape(groups, o // groups, per_group, k)
    y = np.einsum("ngchwk,gock->ngohw", win, wg).reshape(n, o, oh, ow)
    if b is not None:
        y = y + b.astype(np.float64)[:, None, None]
    return finish(y, activation)


conv2d = declare(OpDef(
    "conv2d", (2, 3),
    {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1,
     "activation": "none"},
    _conv2d_shape, _conv_macs, weight_inputs=(1, 2), int8_weights=True, reference=_conv2d_reference,
    doc="2-D convolution, NCHW; padding is [top, left, bottom, right]; depthwise when groups == C"))


def _conv1d_shape(s, a):
    x, w = s[0], s[1]
    _check(x, w, s[2] if len(s) > 2 else None, a["groups"], 1)
    ol = window_out(x[2], w[2], a["stride"][0], sum(a["padding"]), a["dilation"][0])
    return (x[0], w[0], ol)


def _conv1d_reference(x, w, b=None, *, stride, padding, dilation, groups, activation):
    y = _conv2d_reference(x[:, :, None], w[:, :, None], b, stride=[1, stride[0]],
                          padding=[0, padding[0], 0, padding[1]], dilation=[1, dilation[0]],
                          groups=groups, activation=activation)
    return y[:, :, 0]


conv1d = declare(OpDef(
    "conv1d", (2, 3),
    {"stride": [1], "padding": [0, 0], "dilation": [1], "groups": 1, "activation": "none"},
    _conv1d_shape, _conv_macs, weight_inputs=(1, 2), int8_weights=True, reference=_conv1d_reference,
    doc="1-D convolution, NCL; padding is [left, right]"))
