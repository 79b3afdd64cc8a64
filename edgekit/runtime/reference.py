"""Plain-numpy reference implementation of every op: the oracle the kernels are tested against.

Written to be obviously right rather than fast: each op computes in float64 straight from its
definition and rounds to float32 once at the end. Inputs arrive positionally and attributes as
keyword arguments, so each signature documents its op.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph

REFERENCE: dict[str, Callable[..., np.ndarray]] = {}


def _ref(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    REFERENCE[fn.__name__] = fn
    return fn


def evaluate(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor of ``graph`` (inputs, params and each node's output) for the given inputs."""
    values = {**graph.params, **{k: np.asarray(v, np.float32) for k, v in feeds.items()}}
    for node in graph.nodes:
        if node.op not in REFERENCE:
            raise EdgekitError(f"no reference for op {node.op!r}; it has: {sorted(REFERENCE)}")
        values[node.outputs[0]] = REFERENCE[node.op](*(values[n] for n in node.inputs),
                                                     **node.attrs)
    return values


_ACTIVATIONS = {"none": lambda y: y, "relu": lambda y: np.maximum(y, 0),
                "relu6": lambda y: np.clip(y, 0, 6)}


def _out(y: np.ndarray, activation: str = "none") -> np.ndarray:
    return _ACTIVATIONS[activation](y).astype(np.float32)


def _windows(x, kernel, stride, padding, dilation, fill):
    """(N, C, OH, OW, KH*KW) view of every pooling/conv window of x padded with ``fill``."""
    pt, pl, pb, pr = padding
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=fill)
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    oh = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    taps = [x[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]
    return np.stack(taps, axis=-1)


@_ref
def conv2d(x, w, b=None, *, stride, padding, dilation, groups, activation):
    o, per_group, kh, kw = w.shape
    win = _windows(x, (kh, kw), stride, padding, dilation, 0.0)  # N, C, OH, OW, K
    n, _, oh, ow, k = win.shape
    win = win.reshape(n, groups, per_group, oh, ow, k)
    wg = w.astype(np.float64).reshape(groups, o // groups, per_group, k)
    y = np.einsum("ngchwk,gock->ngohw", win, wg).reshape(n, o, oh, ow)
    if b is not None:
        y = y + b.astype(np.float64)[:, None, None]
    return _out(y, activation)


@_ref
def conv1d(x, w, b=None, *, stride, padding, dilation, groups, activation):
    y = conv2d(x[:, :, None], w[:, :, None], b, stride=[1, stride[0]],
               padding=[0, padding[0], 0, padding[1]], dilation=[1, dilation[0]], groups=groups,
               activation=activation)
    return y[:, :, 0]


@_ref
def linear(x, w, b=None, *, activation):
    y = x.astype(np.float64) @ w.astype(np.float64).T
    return _out(y if b is None else y + b, activation)


@_ref
def add(x, y, *, activation):
    return _out(x.astype(np.float64) + y, activation)


@_ref
def mul(x, y):
    return _out(x.astype(np.float64) * y)


@_ref
def relu(x):
    return _out(x, "relu")


@_ref
def relu6(x):
    return _out(x, "relu6")


@_ref
def leaky_relu(x, *, alpha):
    return _out(np.where(x >= 0, x, x.astype(np.float64) * alpha))


@_ref
def maxpool2d(x, *, kernel, stride, padding, dilation):
    return _out(_windows(x, kernel, stride, padding, dilation, -np.inf).max(axis=-1))


@_ref
def avgpool2d(x, *, kernel, stride, padding, count_include_pad):
    total = _windows(x, kernel, stride, padding, [1, 1], 0.0).sum(axis=-1)
    if count_include_pad:
        return _out(total / (kernel[0] * kernel[1]))
    ones = np.ones((1, 1, *x.shape[2:]))
    return _out(total / _windows(ones, kernel, stride, padding, [1, 1], 0.0).sum(axis=-1))


@_ref
def global_avgpool(x):
    return _out(x.astype(np.float64).mean(axis=(2, 3), keepdims=True))


@_ref
def reshape(x, *, shape):
    return x.reshape(x.shape[0], *shape).astype(np.float32)


@_ref
def concat(*xs, axis):
    return np.concatenate(xs, axis=axis).astype(np.float32)


@_ref
def softmax(x, *, axis):
    e = np.exp(x.astype(np.float64) - x.max(axis=axis, keepdims=True))
    return _out(e / e.sum(axis=axis, keepdims=True))


@_ref
def layernorm(x, gamma, beta, *, normalized_ndim, eps):
    axes = tuple(range(x.ndim - normalized_ndim, x.ndim))
    x = x.astype(np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return _out((x - mean) / np.sqrt(var + eps) * gamma + beta)
