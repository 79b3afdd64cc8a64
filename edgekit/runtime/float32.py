"""float32 prepare functions: bind each op's kernel to its arrays once per batch size."""

from __future__ import annotations

import math

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.runtime.kernels import conv, elementwise, int8_conv, linear, norm, pool
from edgekit.runtime.registry import Step, bind, register, sequence

_BOUNDS = elementwise.ACTIVATION_BOUNDS


def _bias(ins: list[np.ndarray], n: int) -> np.ndarray:
    return ins[2] if len(ins) > 2 else np.zeros(n, np.float32)


def phases_shape(w_shape, out_shape, stride, dilation) -> tuple[int, int, int]:
    """(SH * SW, QH, QW): the zero-padded input plane a convolution's windows cover, split by
    stride phase (``strided_depthwise``; one phase, the plane itself, at stride 1)."""
    qh, qw = (-(-((o - 1) * s + (k - 1) * d + 1) // s) for o, k, s, d in zip(
        out_shape[2:], w_shape[2:], stride, dilation, strict=True))
    return stride[0] * stride[1], qh, qw


def pointwise(w_shape, stride, padding, groups) -> bool:
    """A 1x1 stride-1 unpadded convolution of one group: a product of the weights with the
    input's planes as they are."""
    return (tuple(w_shape[2:]) == (1, 1) and tuple(stride) == (1, 1) and not any(padding)
            and groups == 1)


def _conv_scratch(shapes, out_shape, *, groups, padding, stride, dilation, **_) -> int:
    """For one sample: with one input channel per output channel, the padded plane split by
    stride phase and its sums at the phase width; none for a pointwise convolution; else the
    padded channels-last sample and one group's window rows."""
    w = shapes[1]
    if w[1] == 1:
        phases = phases_shape(w, out_shape, stride, dilation)
        return 4 * (math.prod(phases) + out_shape[2] * phases[2])
    if pointwise(w, stride, padding, groups):
        return 0
    return 4 * sum(math.prod(shape) for shape in _channels_last_parts(shapes[0], w, out_shape,
                                                                       padding))


def _channels_last_parts(x_shape, w_shape, out_shape, padding) -> list[tuple[int, ...]]:
    """Shapes of the padded channels-last sample and of one group's window rows."""
    t, left, bottom, right = padding
    return [(x_shape[2] + t + bottom, x_shape[3] + left + right, x_shape[1]),
            (math.prod(out_shape[2:]), math.prod(w_shape[1:]))]


@register("conv2d", scratch=_conv_scratch)
def _conv2d(ins, out, *, stride, padding, dilation, groups, activation, scratch) -> Step:
    x, w = ins[0], ins[1]
    b, bounds = _bias(ins, w.shape[0]), _BOUNDS[activation]
    if w.shape[1] == 1:
        return _depthwise(x, w, b, bounds, tuple(stride), padding, tuple(dilation), scratch, out)
    if pointwise(w.shape, stride, padding, groups):
        weights = w.reshape(w.shape[0], w.shape[1])
        return sequence([(conv.pointwise, x[n].reshape(x.shape[1], -1), weights, b, *bounds,
                          out[n].reshape(out.shape[1], -1)) for n in range(x.shape[0])])
    return _channels_last_conv(x, w, b, bounds, stride, padding, dilation, groups, scratch, out)


def _channels_last_conv(x, w, b, bounds, stride, padding, dilation, groups, scratch,
                        out) -> Step:
    """Per sample: one padded channels-last copy, then per group the window rows (each a few
    contiguous runs of the copy, ordered (ky, kx, channel) like the reordered weights) and
    their product with the weight rows. The int8 path's copy and rows kernels, on float32."""
    padded_shape, rows_shape = _channels_last_parts(x.shape, w.shape, out.shape, padding)
    padded, rows = np.split(scratch.view(np.float32), [math.prod(padded_shape)])
    padded, rows = padded.reshape(padded_shape), rows.reshape(rows_shape)
    per_group, channels = w.shape[1], w.shape[0]
    weights = np.ascontiguousarray(w.reshape(groups, -1, *w.shape[1:]).transpose(0, 1, 3, 4, 2)
                                   ).reshape(groups, channels // groups, -1)
    biases, geometry = b.reshape(groups, -1), (tuple(stride), tuple(dilation))
    calls: list[tuple] = []
    for n in range(x.shape[0]):
        outs = out[n].reshape(groups, -1, rows.shape[0])
        calls.append((int8_conv.pad_channels_last, x[n], 0, padding[0], padding[1], padded))
        for g in range(groups):
            calls += [(int8_conv.window_rows, padded, tuple(w.shape[2:]), *geometry,
                       g * per_group, per_group, out.shape[3], rows),
                      (linear.gemm_nt, weights[g], rows, biases[g], True, *bounds, outs[g])]
    return sequence(calls)


def _depthwise(x, w, b, bounds, stride, padding, dilation, scratch, out) -> Step:
    """One call per sample on zero-padded planes: ``conv.depthwise_planes`` at stride 1 (one
    phase, the plane itself), else ``conv.strided_depthwise``."""
    shape = phases_shape(w.shape, out.shape, stride, dilation)
    phases, acc = np.split(scratch.view(np.float32), [math.prod(shape)])
    if stride == (1, 1):
        kernel, geometry, plane = conv.depthwise_planes, (dilation,), phases
    else:
        kernel, geometry, plane = conv.strided_depthwise, (stride, dilation), phases.reshape(shape)
    return sequence([(kernel, x[n], padding[0], padding[1], np.ascontiguousarray(w[:, 0]), b,
                      *geometry, *bounds, plane, acc, out[n]) for n in range(x.shape[0])])


def _conv1d_scratch(shapes, out_shape, *, groups, padding, stride, dilation, **_) -> int:
    as_2d = [(*s[:2], 1, s[2]) for s in (*shapes[:2], out_shape)]
    return _conv_scratch(as_2d[:2], as_2d[2], groups=groups,
                         padding=[0, padding[0], 0, padding[1]], stride=[1, *stride],
                         dilation=[1, *dilation])


@register("conv1d", scratch=_conv1d_scratch)
def _conv1d(ins, out, *, stride, padding, dilation, groups, activation, scratch) -> Step:
    """A conv2d of height 1."""
    as_2d = [a.reshape(*a.shape[:2], 1, a.shape[2]) for a in (ins[0], ins[1], out)]
    return _conv2d([as_2d[0], as_2d[1], *ins[2:]], as_2d[2], stride=[1, *stride],
                   padding=[0, padding[0], 0, padding[1]], dilation=[1, *dilation],
                   groups=groups, activation=activation, scratch=scratch)


@register("linear")
def _linear(ins, out, *, activation) -> Step:
    x, w = ins[0], ins[1]
    return bind(linear.gemm_nt, x.reshape(-1, x.shape[-1]), w, _bias(ins, w.shape[0]), False,
                *_BOUNDS[activation], out.reshape(-1, out.shape[-1]))


def broadcast_layout(shape, y_shape) -> tuple[np.ndarray, np.ndarray]:
    """``binary``'s (dims, y_strides): axes merged into runs where y is broadcast or not."""
    padded = (1,) * (len(shape) - len(y_shape)) + tuple(y_shape)
    dims: list[int] = []
    broadcast: list[bool] = []
    for d, e in zip(shape, padded, strict=True):
        if e not in (1, d):
            raise EdgekitError(f"operand of shape {tuple(y_shape)} does not broadcast to {shape}")
        if d > 1 and dims and broadcast[-1] == (e == 1):
            dims[-1] *= d
        elif d > 1:
            dims.append(d)
            broadcast.append(e == 1)
    strides, step = [], 1
    for d, b in zip(reversed(dims), reversed(broadcast), strict=True):
        strides.append(0 if b else step)
        step *= 1 if b else d
    return np.array(dims or [1], np.int64), np.array(strides[::-1] or [0], np.int64)


def _binary(ins, out, multiply: bool, activation: str) -> Step:
    x, y = ins
    if x.shape != out.shape:
        raise EdgekitError(f"first operand {x.shape} must have the output's shape {out.shape} "
                           "(only the second operand broadcasts)")
    dims, strides = broadcast_layout(out.shape, y.shape)
    return bind(elementwise.binary, x.reshape(-1), y.reshape(-1), dims, strides, multiply,
                *_BOUNDS[activation], out.reshape(-1))


@register("add")
def _add(ins, out, *, activation) -> Step:
    return _binary(ins, out, False, activation)


@register("mul")
def _mul(ins, out) -> Step:
    return _binary(ins, out, True, "none")


@register("maxpool2d")
def _maxpool2d(ins, out, *, kernel, stride, padding, dilation) -> Step:
    return bind(pool.max_pool2d, ins[0], tuple(kernel), tuple(stride), tuple(padding[:2]),
                tuple(dilation), np.float32(-np.inf), out)


@register("avgpool2d")
def _avgpool2d(ins, out, *, kernel, stride, padding, count_include_pad) -> Step:
    return bind(pool.avg_pool2d, ins[0], tuple(kernel), tuple(stride), tuple(padding[:2]),
                count_include_pad, out)


@register("global_avgpool")
def _global_avgpool(ins, out) -> Step:
    x = ins[0]
    return bind(pool.row_mean, x.reshape(x.shape[0] * x.shape[1], -1), out.reshape(-1))


@register("reshape")
def _reshape(ins, out, *, shape) -> Step:
    return bind(np.copyto, out, ins[0].reshape(out.shape))


@register("concat")
def _concat(ins, out, *, axis) -> Step:
    axis %= out.ndim
    ends = np.cumsum([x.shape[axis] for x in ins])
    parts = [(out[(slice(None),) * axis + (slice(end - x.shape[axis], end),)], x)
             for x, end in zip(ins, ends, strict=True)]

    def step() -> None:
        for dst, src in parts:
            np.copyto(dst, src)

    return step


def _around_axis(a: np.ndarray, axis: int) -> np.ndarray:
    """``a`` viewed as (before axis, axis, after axis)."""
    axis %= a.ndim
    return a.reshape(math.prod(a.shape[:axis]), a.shape[axis], -1)


@register("softmax")
def _softmax(ins, out, *, axis) -> Step:
    return bind(elementwise.softmax, _around_axis(ins[0], axis), _around_axis(out, axis))


@register("layernorm")
def _layernorm(ins, out, *, normalized_ndim, eps) -> Step:
    x, gamma, beta = ins
    features = gamma.size
    return bind(norm.layernorm, x.reshape(-1, features), gamma.reshape(-1), beta.reshape(-1),
                float(eps), out.reshape(-1, features))
