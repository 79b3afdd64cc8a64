"""The closed operator set of the Graph: attributes, shape inference and MAC counts per op.

Every other part (importers, runtime, writers, profiler) reads this table, so an op is added
here once and its shape rule, attribute schema and cost are checked the same way everywhere.
Shapes include the leading batch dimension; weights are in torch layout (conv: OIHW).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import EdgekitError

Shape = tuple[int, ...]
ACTIVATIONS = ("none", "relu", "relu6")


@dataclass(frozen=True)
class OpSpec:
    """What an op takes (inputs, attributes with defaults or `REQUIRED`) and what it costs."""

    name: str
    n_inputs: tuple[int, int]
    attrs: dict[str, Any]
    infer: Callable[[list[Shape], dict[str, Any]], Shape]
    macs: Callable[[list[Shape], Shape, dict[str, Any]], int] = lambda i, o, a: 0
    weight_inputs: tuple[int, ...] = field(default=())  # input slots that must be params
    doc: str = ""


REQUIRED = object()
OPS: dict[str, OpSpec] = {}


def _op(name, n_inputs, attrs, *, macs=None, weights=(), doc=""):
    def register(infer):
        OPS[name] = OpSpec(name, n_inputs, attrs, infer, macs or (lambda i, o, a: 0), weights, doc)
        return infer

    return register


def _fail(msg: str):
    raise EdgekitError(msg)


def _prod(shape) -> int:
    return math.prod(int(d) for d in shape)


def _conv_out(size: int, k: int, stride: int, pad: int, dil: int) -> int:
    out = (size + pad - dil * (k - 1) - 1) // stride + 1
    if out < 1:
        _fail(f"window of {k} (dilation {dil}) does not fit input size {size} with padding {pad}")
    return out


def _check_conv(x, w, b, groups, nd):
    if len(x) != nd + 2 or len(w) != nd + 2:
        _fail(f"conv{nd}d expects rank-{nd + 2} input and weight, got {x} and {w}")
    if groups < 1 or x[1] % groups or w[0] % groups:
        _fail(f"groups={groups} must divide input channels {x[1]} and output channels {w[0]}")
    if w[1] * groups != x[1]:
        _fail(f"weight {w} expects {w[1] * groups} input channels, input has {x[1]}")
    if b is not None and tuple(b) != (w[0],):
        _fail(f"bias shape {b} does not match {w[0]} output channels")


@_op("conv2d", (2, 3),
     {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1,
      "activation": "none"},
     macs=lambda i, o, a: _prod(o) * _prod(i[1][1:]), weights=(1, 2),
     doc="2-D convolution, NCHW; padding is [top, left, bottom, right]; depthwise when groups == C")
def _conv2d(s, a):
    x, w = s[0], s[1]
    _check_conv(x, w, s[2] if len(s) > 2 else None, a["groups"], 2)
    pt, pl, pb, pr = a["padding"]
    oh = _conv_out(x[2], w[2], a["stride"][0], pt + pb, a["dilation"][0])
    ow = _conv_out(x[3], w[3], a["stride"][1], pl + pr, a["dilation"][1])
    return (x[0], w[0], oh, ow)


@_op("conv1d", (2, 3),
     {"stride": [1], "padding": [0, 0], "dilation": [1], "groups": 1, "activation": "none"},
     macs=lambda i, o, a: _prod(o) * _prod(i[1][1:]), weights=(1, 2),
     doc="1-D convolution, NCL; padding is [left, right]")
def _conv1d(s, a):
    x, w = s[0], s[1]
    _check_conv(x, w, s[2] if len(s) > 2 else None, a["groups"], 1)
    ol = _conv_out(x[2], w[2], a["stride"][0], sum(a["padding"]), a["dilation"][0])
    return (x[0], w[0], ol)


@_op("linear", (2, 3), {"activation": "none"},
     macs=lambda i, o, a: _prod(o) * i[1][1], weights=(1, 2),
     doc="y = x @ W.T + b over the last axis; W is [out, in]")
def _linear(s, a):
    x, w = s[0], s[1]
    if len(w) != 2 or len(x) < 2 or x[-1] != w[1]:
        _fail(f"linear weight {w} does not match input {x}")
    if len(s) > 2 and tuple(s[2]) != (w[0],):
        _fail(f"bias shape {s[2]} does not match {w[0]} outputs")
    return (*x[:-1], w[0])


def _broadcast(s, a):
    x, y = s
    if len(y) > len(x):
        _fail(f"second operand {y} has higher rank than the first {x}")
    y = (1,) * (len(x) - len(y)) + tuple(y)
    for dx, dy in zip(x, y):
        if dy not in (1, dx):
            _fail(f"shapes {x} and {s[1]} do not broadcast to the first operand's shape")
    return tuple(x)


OPS["add"] = OpSpec("add", (2, 2), {"activation": "none"}, _broadcast,
                    doc="elementwise x + y; y broadcasts to x's shape")
OPS["mul"] = OpSpec("mul", (2, 2), {}, _broadcast,
                    macs=lambda i, o, a: _prod(o), doc="elementwise x * y; y broadcasts to x")


def _same(s, a):
    return tuple(s[0])


OPS["relu"] = OpSpec("relu", (1, 1), {}, _same)
OPS["relu6"] = OpSpec("relu6", (1, 1), {}, _same)
OPS["leaky_relu"] = OpSpec("leaky_relu", (1, 1), {"alpha": 0.01}, _same)


def _pool(s, a):
    x = s[0]
    if len(x) != 4:
        _fail(f"2-D pooling expects NCHW input, got {x}")
    pt, pl, pb, pr = a["padding"]
    kh, kw = a["kernel"]
    if max(pt, pb) * 2 > kh or max(pl, pr) * 2 > kw:
        _fail(f"pool padding {a['padding']} must be at most half the kernel {a['kernel']}")
    dh, dw = a.get("dilation", [1, 1])
    return (x[0], x[1], _conv_out(x[2], kh, a["stride"][0], pt + pb, dh),
            _conv_out(x[3], kw, a["stride"][1], pl + pr, dw))


_pool_macs = lambda i, o, a: _prod(o) * _prod(a["kernel"])  # noqa: E731 (adds, counted as MACs)
OPS["avgpool2d"] = OpSpec("avgpool2d", (1, 1),
                          {"kernel": REQUIRED, "stride": REQUIRED, "padding": [0, 0, 0, 0],
                           "count_include_pad": True}, _pool, _pool_macs)
OPS["maxpool2d"] = OpSpec("maxpool2d", (1, 1),
                          {"kernel": REQUIRED, "stride": REQUIRED, "padding": [0, 0, 0, 0],
                           "dilation": [1, 1]}, _pool)


@_op("global_avgpool", (1, 1), {}, macs=lambda i, o, a: _prod(i[0]),
     doc="mean over H and W keeping them as 1 (AdaptiveAvgPool2d(1))")
def _gap(s, a):
    if len(s[0]) != 4:
        _fail(f"global_avgpool expects NCHW input, got {s[0]}")
    return (s[0][0], s[0][1], 1, 1)


@_op("reshape", (1, 1), {"shape": REQUIRED}, doc="per-sample target shape, batch kept")
def _reshape(s, a):
    target = tuple(a["shape"])
    if any(d < 1 for d in target) or _prod(target) != _prod(s[0][1:]):
        _fail(f"cannot reshape {s[0]} to batch x {list(target)}")
    return (s[0][0], *target)


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        _fail(f"axis {axis} out of range for rank {rank}")
    axis %= rank
    if axis == 0:
        _fail("operating along the batch axis is not supported")
    return axis


@_op("concat", (1, 64), {"axis": REQUIRED})
def _concat(s, a):
    axis = _axis(a["axis"], len(s[0]))
    for t in s[1:]:
        if len(t) != len(s[0]) or any(t[i] != s[0][i] for i in range(len(t)) if i != axis):
            _fail(f"concat inputs {s} differ outside axis {axis}")
    return tuple(sum(t[i] for t in s) if i == axis else s[0][i] for i in range(len(s[0])))


@_op("softmax", (1, 1), {"axis": -1})
def _softmax(s, a):
    _axis(a["axis"], len(s[0]))
    return tuple(s[0])


@_op("layernorm", (3, 3), {"normalized_ndim": 1, "eps": 1e-5}, weights=(1, 2),
     macs=lambda i, o, a: 2 * _prod(o), doc="LayerNorm over the last normalized_ndim axes")
def _layernorm(s, a):
    x, g, b = s
    k = a["normalized_ndim"]
    if not 1 <= k < len(x) or tuple(g) != tuple(x[-k:]) or tuple(b) != tuple(x[-k:]):
        _fail(f"layernorm over {k} axes of {x} needs gamma/beta of shape {x[-k:]}, got {g}, {b}")
    return tuple(x)


NEURON_RESETS = ("subtract", "zero")


def _neuron(s, a):
    """A spiking neuron keeps one membrane per element of its input; its threshold and optional
    initial membrane are params of the per-sample shape (per neuron; a per-channel threshold is
    stored expanded). Time steps are the Graph's ``metadata["timesteps"]``."""
    if a["reset"] not in NEURON_RESETS:
        _fail(f"reset must be one of {NEURON_RESETS}, got {a['reset']!r}")
    if not 0.0 < a.get("leak", 1.0) <= 1.0:
        _fail(f"leak must be in (0, 1], got {a['leak']}")
    for p in s[1:]:
        if tuple(p) != tuple(s[0][1:]):
            _fail(f"neuron params must have the per-sample shape {s[0][1:]}, got {p}")
    return tuple(s[0])


_NEURON_DOC = ("charge V = {leak}V + x, fire s = V >= threshold, reset (subtract the threshold "
               "or to zero); output s * threshold; inputs x, threshold[, initial membrane]")
OPS["if_neuron"] = OpSpec("if_neuron", (2, 3), {"reset": "subtract"}, _neuron,
                          weight_inputs=(1, 2), doc=_NEURON_DOC.format(leak=""))
OPS["lif_neuron"] = OpSpec("lif_neuron", (2, 3), {"reset": "subtract", "leak": 0.9},
                           _neuron, weight_inputs=(1, 2), doc=_NEURON_DOC.format(leak="leak * "))
NEURON_OPS = ("if_neuron", "lif_neuron")


def resolve_attrs(op: str, attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes with defaults filled in; unknown or missing attributes are an error."""
    spec = OPS.get(op)
    if spec is None:
        _fail(f"unknown op {op!r}; the op set is: {', '.join(sorted(OPS))}")
    unknown = set(attrs) - set(spec.attrs)
    if unknown:
        _fail(f"op {op!r} has no attribute(s) {sorted(unknown)}; it takes {sorted(spec.attrs)}")
    out = {}
    for key, default in spec.attrs.items():
        if key in attrs:
            out[key] = attrs[key]
        elif default is REQUIRED:
            _fail(f"op {op!r} needs attribute {key!r}")
        else:
            out[key] = default
        _check_attr_type(op, key, out[key], default)
    if out.get("activation", "none") not in ACTIVATIONS:
        _fail(f"op {op!r}: activation must be one of {ACTIVATIONS}, got {out['activation']!r}")
    return out


def _check_attr_type(op, key, value, default):
    """Attributes come from files too: list attributes must be int lists of the right length."""
    if isinstance(default, list) or (default is REQUIRED and key in ("kernel", "stride", "shape")):
        ok = isinstance(value, list) and all(type(v) is int for v in value)
        if ok and isinstance(default, list):
            ok = len(value) == len(default)
        if ok and key in ("stride", "dilation", "kernel"):
            ok = all(v >= 1 for v in value) and len(value) in (1, 2)
        if ok and key == "padding":
            ok = all(v >= 0 for v in value)
        if not ok:
            _fail(f"op {op!r}: attribute {key!r} must be a list of valid ints, got {value!r}")
    elif isinstance(default, bool):
        if type(value) is not bool:
            _fail(f"op {op!r}: attribute {key!r} must be a bool, got {value!r}")
    elif isinstance(default, int) or key == "axis":
        if type(value) is not int or (key == "groups" and value < 1):
            _fail(f"op {op!r}: attribute {key!r} must be an int, got {value!r}")
    elif isinstance(default, float):
        if type(value) not in (int, float) or not math.isfinite(value):
            _fail(f"op {op!r}: attribute {key!r} must be a finite number, got {value!r}")
    elif isinstance(default, str) and not isinstance(value, str):
        _fail(f"op {op!r}: attribute {key!r} must be a string, got {value!r}")
