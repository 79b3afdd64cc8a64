"""2-D pooling: avgpool2d, maxpool2d and global_avgpool (AdaptiveAvgPool2d(1)), NCHW."""

from __future__ import annotations

import numpy as np

from edgekit.ops import declare
from edgekit.ops.schema import REQUIRED, OpDef, fail, prod, window_out
from edgekit.ops.util import finish, windows


def _shape(s, a):
    x = s[0]
    if len(x) != 4:
        fail(f"2-D pooling expects NCHW input, got {x}")
    pt, pl, pb, pr = a["padding"]
    kh, kw = a["kernel"]
    if max(pt, pb) * 2 > kh or max(pl, pr) * 2 > kw:
        fail(f"pool padding {a['padding']} must be at most half the kernel {a['kernel']}")
    dh, dw = a.get("dilation", [1, 1])
    return (x[0], x[1], window_out(x[2], kh, a["stride"][0], pt + pb, dh),
            window_out(x[3], kw, a["stride"][1], pl + pr, dw))


def _window_adds(i, o, a) -> int:
    return prod(o) * prod(a["kernel"])  # adds, counted as MACs


def _avg_reference(x, *, kernel, stride, padding, count_include_pad):
    total = windows(x, kernel, stride, padding, [1, 1], 0.0).sum(axis=-1)
    if count_include_pad:
        return finish(total / (kernel[0] * kernel[1]))
    ones = np.ones((1, 1, *x.shape[2:]))
    return finish(total / windows(ones, kernel, stride, padding, [1, 1], 0.0).sum(axis=-1))


avgpool2d = declare(OpDef(
    "avgpool2d", (1, 1),
    {"kernel": REQUIRED, "stride": REQUIRED, "padding": [0, 0, 0, 0], "count_include_pad": True},
    _shape, _window_adds, quant="first_input", reference=_avg_reference,
    doc="mean over each window; padding is [top, left, bottom, right]"))


def _max_reference(x, *, kernel, stride, padding, dilation):
    return finish(windows(x, kernel, stride, padding, dilation, -np.inf).max(axis=-1))


maxpool2d = declare(OpDef(
    "maxpool2d", (1, 1),
    {"kernel": REQUIRED, "stride": REQUIRED, "padding": [0, 0, 0, 0], "dilation": [1, 1]},
    _shape, quant="first_input", reference=_max_reference,
    doc="max over each window; padding is [top, left, bottom, right]"))


def _global_shape(s, a):
    if len(s[0]) != 4:
        fail(f"global_avgpool expects NCHW input, got {s[0]}")
    return (s[0][0], s[0][1], 1, 1)


global_avgpool = declare(OpDef(
    "global_avgpool", (1, 1), {}, _global_shape, lambda i, o, a: prod(i[0]), quant="first_input",
    reference=lambda x: finish(x.astype(np.float64).mean(axis=(2, 3), keepdims=True)),
    doc="mean over H and W keeping them as 1 (AdaptiveAvgPool2d(1))"))
