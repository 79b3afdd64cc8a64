"""int8 quantization end to end.

- TFLite's fixed-point arithmetic (``edgekit.numerics.arith``) against big-int Python on random
  values;
- ``edgekit.quantize``: valid Graphs that save and load, each calibration method, shared and
  fixed quantization, weights and biases, and every bad input;
- every int8 kernel against a plain-numpy implementation of TFLite's formulas, over random shapes
  and quantization parameters, and the TFLite-writable ones against tflite-micro bit for bit;
- whole models: int8 accuracy within a point of float, and the digits CNN bit-exact with
  tflite-micro.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import edgekit
from edgekit import EdgekitError
from edgekit.converters.builder import GraphBuilder
from edgekit.graph import Graph, QuantParams
from edgekit.numerics import arith
from edgekit.ops import ACTIVATIONS
from edgekit.quant import dequantize_array, quantize_array
from edgekit.runtime import Executor, reference

SETTINGS = settings(max_examples=12, deadline=None)
INT32 = st.integers(arith.INT32_MIN, arith.INT32_MAX)


# --- arithmetic: arith.py against unbounded Python integers ----------------------------------

def big_srdhm(a: int, b: int) -> int:
    if a == b == arith.INT32_MIN:
        return arith.INT32_MAX
    ab = a * b
    num = ab + (1 << 30 if ab >= 0 else 1 - (1 << 30))
    return abs(num) // (1 << 31) * (1 if num >= 0 else -1)  # C division: toward zero


def big_rounding_divide(x: int, n: int) -> int:
    """x / 2^n rounded to nearest, ties away from zero."""
    q, r = divmod(abs(x), 1 << n)
    return (q + (2 * r >= 1 << n)) * (1 if x >= 0 else -1)


@settings(max_examples=300, deadline=None)
@given(INT32, INT32)
def test_srdhm_matches_big_ints(a, b):
    assert arith.srdhm(a, b) == big_srdhm(a, b)


@settings(max_examples=300, deadline=None)
@given(INT32, st.integers(0, 31))
def test_rounding_divide_by_pot_rounds_half_away_from_zero(x, n):
    assert arith.rounding_divide_by_pot(x, n) == big_rounding_divide(x, n)


@settings(max_examples=300, deadline=None)
@given(st.floats(1e-12, 1e4))
def test_quantize_multiplier_is_a_normalized_fixed_point_number(real):
    m0, shift = arith.quantize_multiplier(real)
    if shift == m0 == 0:  # below 2^-32: TFLite flushes it to zero
        assert real < 2.0 ** -31
        return
    assert 1 << 30 <= m0 < 1 << 31
    assert abs(m0 * 2.0 ** (shift - 31) - real) <= real * 2.0 ** -31


@settings(max_examples=300, deadline=None)
@given(st.integers(-(1 << 24), 1 << 24), st.floats(1e-6, 0.99))
def test_multiply_by_quantized_multiplier_is_the_two_roundings(acc, real):
    m0, shift = arith.quantize_multiplier(real)
    expected = big_rounding_divide(big_srdhm(acc * (1 << max(shift, 0)), m0), max(-shift, 0))
    got = arith.multiply_by_quantized_multiplier(acc, m0, shift)
    assert got == expected
    assert abs(got - acc * real) <= 1 + abs(acc * real) * 2.0 ** -30


def test_rounding_edges():
    assert arith.srdhm(arith.INT32_MIN, arith.INT32_MIN) == arith.INT32_MAX
    assert [arith.rounding_divide_by_pot(x, 1) for x in (-3, -1, 1, 3)] == [-2, -1, 1, 2]
    assert arith.quantize_multiplier(1.0) == (1 << 30, 1)
    q = QuantParams([0.5], [3])
    np.testing.assert_array_equal(quantize_array(np.array([-1.25, -0.25, 0.25, 1.25, 99]), q),
                                  [0, 2, 4, 6, 127])  # halves go away from zero, then clamp
    np.testing.assert_array_equal(dequantize_array(np.array([3, 5], np.int8), q), [0.0, 1.0])


# --- plain-numpy TFLite reference for every int8 op ------------------------------------------

def f32(v) -> np.ndarray:
    """A scale as the float32 a .tflite file stores, in float64."""
    return np.asarray(v, np.float32).astype(np.float64)


def zp(q: QuantParams) -> int:
    return q.zero_point[0]


def multipliers(reals) -> tuple[np.ndarray, np.ndarray]:
    pairs = [arith.quantize_multiplier(float(r)) for r in np.ravel(reals)]
    return (np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64))


def np_mbqm(acc, m, shift) -> np.ndarray:
    """MultiplyByQuantizedMultiplier on int64 arrays (products stay below 2^62)."""
    acc, m, shift = (np.asarray(v, np.int64) for v in (acc, m, shift))
    ab = acc * (1 << np.maximum(shift, 0)) * m
    num = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(num >= 0, num >> 31, -((-num) >> 31))
    right = np.maximum(-shift, 0)
    mask = (1 << right) - 1
    return (high >> right) + ((high & mask) > (mask >> 1) + (high < 0))


def bounds(activation: str, q: QuantParams) -> tuple[int, int]:
    """TFLite's CalculateActivationRangeQuantized (float32 ``f / scale``, rounded half away)."""
    def quantized(f):
        v = np.float32(f) / np.float32(q.scale[0])
        return zp(q) + int(np.sign(v) * np.floor(abs(v) + np.float32(0.5)))
    lo = -128 if activation == "none" else max(-128, quantized(0))
    return lo, min(127, quantized(6)) if activation == "relu6" else 127


def requant(acc, reals, q_out: QuantParams, activation: str = "none") -> np.ndarray:
    m, s = multipliers(reals)
    shape = (1, -1) + (1,) * (acc.ndim - 2) if m.size > 1 else ()
    y = np_mbqm(acc, m.reshape(shape), s.reshape(shape)) + zp(q_out)
    return np.clip(y, *bounds(activation, q_out)).astype(np.int8)


def tfl_conv2d(x, w, b, *, q, stride, padding, dilation, groups, activation, out_shape):
    """CONV_2D / DEPTHWISE_CONV_2D per channel: padded taps add nothing (x - zp = 0)."""
    t, left, bottom, right = padding
    xp = np.pad(x.astype(np.int64) - zp(q[0]), ((0, 0), (0, 0), (t, bottom), (left, right)))
    (sh, sw), (dh, dw), (oh, ow) = stride, dilation, out_shape[2:]
    per_in, per_out = w.shape[1], w.shape[0] // groups
    acc = np.zeros(out_shape, np.int64) + b.astype(np.int64)[None, :, None, None]
    for g in range(groups):
        xs, ws = xp[:, g * per_in:(g + 1) * per_in], w[g * per_out:(g + 1) * per_out]
        for i in range(w.shape[2]):
            for j in range(w.shape[3]):
                win = xs[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                         j * dw:j * dw + sw * (ow - 1) + 1:sw]
                acc[:, g * per_out:(g + 1) * per_out] += np.einsum(
                    "nchw,oc->nohw", win, ws[:, :, i, j].astype(np.int64))
    reals = f32(q[0].scale[0]) * f32(q[1].scale) / f32(q[-1].scale[0])
    return requant(acc, reals, q[-1], activation)


def tfl_conv1d(x, w, b, *, q, stride, padding, dilation, groups, activation, out_shape):
    y = tfl_conv2d(x[:, :, None], w[:, :, None], b, q=q, stride=[1, *stride],
                   padding=[0, padding[0], 0, padding[1]], dilation=[1, *dilation],
                   groups=groups, activation=activation,
                   out_shape=(*out_shape[:2], 1, out_shape[2]))
    return y[:, :, 0]


def tfl_linear(x, w, b, *, q, activation, out_shape):
    """FULLY_CONNECTED; per-tensor weights multiply s_in * s_w in float32 first."""
    acc = (x.astype(np.int64) - zp(q[0])) @ w.astype(np.int64).T + b
    s_in, s_w = np.float32(q[0].scale[0]), np.asarray(q[1].scale, np.float32)
    product = f32(s_in * s_w) if len(q[1].scale) == 1 else f32(s_in) * f32(s_w)
    reals = np.broadcast_to(product / f32(q[-1].scale[0]), (w.shape[0],))
    flat = requant(acc.reshape(-1, w.shape[0]), reals, q[-1], activation)
    return flat.reshape(out_shape)


def tfl_add(x, y, *, q, activation, out_shape):
    s1, s2, s_out = (f32(p.scale[0]) for p in q)
    twice = 2 * max(s1, s2)
    (m1, m2, mo), (e1, e2, eo) = multipliers([s1 / twice, s2 / twice, twice / (2**20 * s_out)])
    a = np_mbqm((x.astype(np.int64) - zp(q[0])) << 20, m1, e1)
    c = np_mbqm((np.broadcast_to(y, x.shape).astype(np.int64) - zp(q[1])) << 20, m2, e2)
    return np.clip(np_mbqm(a + c, mo, eo) + zp(q[2]), *bounds(activation, q[2])).astype(np.int8)


def tfl_mul(x, y, *, q, out_shape):
    prod = (x.astype(np.int64) - zp(q[0])) * (np.broadcast_to(y, x.shape).astype(np.int64)
                                              - zp(q[1]))
    return requant(prod, [f32(q[0].scale[0]) * f32(q[1].scale[0]) / f32(q[2].scale[0])], q[2])


def tfl_leaky_relu(x, *, q, alpha, out_shape):
    s_in, s_out = np.float32(q[0].scale[0]), np.float32(q[1].scale[0])
    (m_id, m_a), (e_id, e_a) = multipliers([s_in / s_out, s_in * np.float32(alpha) / s_out])
    v = x.astype(np.int64) - zp(q[0])
    y = np.where(v >= 0, np_mbqm(v, m_id, e_id), np_mbqm(v, m_a, e_a)) + zp(q[1])
    return np.clip(y, -128, 127).astype(np.int8)


def tfl_clamp(activation):
    return lambda x, *, q, out_shape: np.clip(x, *bounds(activation, q[-1])).astype(np.int8)


def windows(x, kernel, stride, padding, dilation, fill):
    """(N, C, OH, OW, KH*KW) int64 taps, padding filled with ``fill``."""
    t, left, bottom, right = padding
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (t, bottom), (left, right)),
                constant_values=fill)
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    return np.stack([xp[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                        j * dw:j * dw + sw * (ow - 1) + 1:sw]
                     for i in range(kh) for j in range(kw)], axis=-1)


def tfl_maxpool2d(x, *, q, kernel, stride, padding, dilation, out_shape):
    return windows(x, kernel, stride, padding, dilation, -10**9).max(axis=-1).astype(np.int8)


def tfl_avgpool2d(x, *, q, kernel, stride, padding, count_include_pad, out_shape):
    """AVERAGE_POOL_2D: (sum +- count/2) / count truncating; counted padding is the zero
    point (real 0)."""
    taps = windows(x, kernel, stride, padding, (1, 1), -10**9)
    inside = taps > -10**9
    total = np.where(inside, taps, zp(q[0]) if count_include_pad else 0).sum(axis=-1)
    count = np.full_like(total, kernel[0] * kernel[1]) if count_include_pad else inside.sum(-1)
    half = count // 2
    avg = np.where(total > 0, (total + half) // count, -((-total + half) // count))
    return np.clip(avg, -128, 127).astype(np.int8)


def tfl_global_avgpool(x, *, q, out_shape):
    return tfl_avgpool2d(x, q=q, kernel=list(x.shape[2:]), stride=[1, 1], padding=[0] * 4,
                         count_include_pad=False, out_shape=out_shape)


def tfl_reshape(x, *, q, shape, out_shape):
    return x.reshape(out_shape)


def tfl_concat(*xs, q, axis, out_shape):
    return np.concatenate(xs, axis=axis)


def in_float(op):
    """softmax / layernorm as the contract declares them: float between the edge conversions."""
    def run(x, *params, q, out_shape, **attrs):
        y = reference.REFERENCE[op](dequantize_array(x, q[0]), *params, **attrs)
        return quantize_array(y, q[-1])
    return run


TFLITE = {"conv2d": tfl_conv2d, "conv1d": tfl_conv1d, "linear": tfl_linear, "add": tfl_add,
          "mul": tfl_mul, "leaky_relu": tfl_leaky_relu, "relu": tfl_clamp("relu"),
          "relu6": tfl_clamp("relu6"), "maxpool2d": tfl_maxpool2d, "avgpool2d": tfl_avgpool2d,
          "global_avgpool": tfl_global_avgpool, "reshape": tfl_reshape, "concat": tfl_concat,
          "softmax": in_float("softmax"), "layernorm": in_float("layernorm")}


# --- random int8 single-op Graphs ------------------------------------------------------------

SHARED = {"maxpool2d", "avgpool2d", "global_avgpool", "reshape", "relu", "relu6", "concat"}


def random_quant(rng) -> QuantParams:
    return QuantParams([float(np.float32(10 ** rng.uniform(-3, -0.5)))],
                       [int(rng.integers(-128, 128))])


def int8_op_graph(op, shapes, params, attrs, rng) -> tuple[Graph, list[np.ndarray]]:
    """One ``op`` node on int8 inputs of ``shapes`` with random quantization; ``params`` are
    float arrays: weights become int8 per channel, biases int32 and other params int8. The
    output's scale fits the float result's range (times a random factor), so it neither
    saturates nor collapses."""
    b = GraphBuilder()
    names = [b.input(f"x{i}", s) for i, s in enumerate(shapes)]
    names += [b.param(p, f"p{i}") for i, p in enumerate(params)]
    b.output(b.node(op, names, attrs))
    g = b.build()
    node = g.nodes[0]
    xs = [rng.integers(-128, 128, (rng.integers(1, 3), *s[1:])).astype(np.int8) for s in shapes]
    xs = [x[:1] if len(xs) > 1 else x for x in xs]  # several inputs: one batch size
    shared = random_quant(rng)
    for name in g.inputs:
        g.tensors[name].dtype = "int8"
        g.tensors[name].quant = shared if op in SHARED else random_quant(rng)
    weighted = op in ("conv2d", "conv1d", "linear")
    for slot, name in enumerate(node.inputs[len(shapes):], len(shapes)):
        value, info = g.params[name], g.tensors[name]
        if weighted and slot == 1:
            s_w = np.abs(value).reshape(len(value), -1).max(axis=1) / 127 + 1e-6
            per_channel = rng.random() < 0.75
            s_w = s_w if per_channel else s_w.max(keepdims=True)
            q = QuantParams([float(np.float32(s)) for s in s_w], [0] * len(s_w),
                            0 if per_channel else None)
            shaped = np.asarray(q.scale).reshape(-1, *[1] * (value.ndim - 1))
            g.params[name] = np.clip(np.rint(value / shaped), -127, 127).astype(np.int8)
        elif weighted:
            s_b = g.tensors[node.inputs[0]].quant.scale[0] * np.asarray(
                g.tensors[node.inputs[1]].quant.scale)
            q = QuantParams([float(s) for s in s_b], [0] * len(s_b),
                            g.tensors[node.inputs[1]].quant.axis)
            g.params[name] = np.rint(value / s_b).astype(np.int32)
        elif op == "layernorm":
            continue
        else:
            q = random_quant(rng)
            g.params[name] = quantize_array(value, q)
        info.dtype, info.quant = str(g.params[name].dtype), q
    out = g.tensors[node.outputs[0]]
    out.dtype = "int8"
    if op in SHARED:
        out.quant = shared
    elif op == "softmax":
        out.quant = QuantParams([1 / 256], [-128])
    else:
        out.quant = _fitting_quant(g, node, xs, rng)
    g.metadata["quantized"] = "int8"
    return g.validate(), xs


def _fitting_quant(g: Graph, node, xs, rng) -> QuantParams:
    real = [dequantize_array(x, g.tensors[n].quant) for n, x in zip(g.inputs, xs, strict=True)]
    for name in node.inputs[len(xs):]:
        q, v = g.tensors[name].quant, g.params[name]
        if q is None:
            real.append(v)
            continue
        scale = np.asarray(q.scale).reshape(-1, *[1] * (v.ndim - 1)) if q.axis == 0 else q.scale[0]
        real.append((v.astype(np.float64) - (q.zero_point[0] if q.axis is None else 0)) * scale)
    y = reference.REFERENCE[node.op](*real, **node.attrs)
    lo, hi = min(float(y.min()), 0.0), max(float(y.max()), 0.0)
    scale = max(hi - lo, 1e-3) / 255 * rng.uniform(0.6, 1.5)
    return QuantParams([float(np.float32(scale))],
                       [int(np.clip(round(-128 - lo / scale) + rng.integers(-8, 9), -128, 127))])


def check_int8(op, shapes, params, attrs, seed, tolerance=0) -> tuple[Graph, list[np.ndarray]]:
    """The runtime's int8 output equals the numpy TFLite reference (within ``tolerance`` steps
    for the float-inside ops)."""
    rng = np.random.default_rng(seed)
    g, xs = int8_op_graph(op, shapes, params, attrs, rng)
    node = g.nodes[0]
    got = Executor(g).run(xs, raw=True)
    q = [g.tensors[n].quant for n in (*node.inputs, node.outputs[0])]
    want = TFLITE[op](*xs, *(g.params[n] for n in node.inputs[len(xs):]), q=q,
                      out_shape=got.shape, **node.attrs)
    assert got.dtype == np.int8 and got.shape == want.shape
    diff = np.abs(got.astype(np.int32) - want)
    assert diff.max(initial=0) <= tolerance, f"{op}: {(diff > 0).sum()} values differ"
    return g, xs


def draw(data, lo, hi, n=1):
    return [data.draw(st.integers(lo, hi)) for _ in range(n)]


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def conv_case(data, tflite: bool):
    """(shapes, params, attrs) of a random conv2d; ``tflite``: groups 1 or depthwise only."""
    rng = np.random.default_rng(draw(data, 0, 2**31)[0])
    kind = data.draw(st.sampled_from(["dense", "depthwise"] if tflite else
                                     ["dense", "depthwise", "grouped"]))
    cin = draw(data, 1, 6)[0]
    groups, cout = {"dense": (1, draw(data, 1, 7)[0]),
                    "depthwise": (cin, cin * draw(data, 1, 2)[0]),
                    "grouped": (2, 2 * draw(data, 1, 3)[0])}[kind]
    cin = 2 * cin if kind == "grouped" else cin
    kh, kw, sh, sw = draw(data, 1, 3, 4)
    dh, dw = draw(data, 1, 2, 2)
    pad = draw(data, 0, 2, 4)
    h = max(1, dh * (kh - 1) + 1 - pad[0] - pad[2]) + draw(data, 0, 6)[0]
    w = max(1, dw * (kw - 1) + 1 - pad[1] - pad[3]) + draw(data, 0, 6)[0]
    attrs = {"stride": [sh, sw], "padding": pad, "dilation": [dh, dw], "groups": groups,
             "activation": data.draw(st.sampled_from(ACTIVATIONS))}
    return ([(1, cin, h, w)], [randn(rng, cout, cin // groups, kh, kw), randn(rng, cout)],
            attrs)


def pool_case(data):
    kh, kw, sh, sw = draw(data, 1, 3, 4)
    (pt, pb), (pl, pr) = draw(data, 0, kh // 2, 2), draw(data, 0, kw // 2, 2)
    pad = [pt, pl, pb, pr]
    shape = (1, draw(data, 1, 4)[0], kh + draw(data, 0, 5)[0], kw + draw(data, 0, 5)[0])
    return shape, {"kernel": [kh, kw], "stride": [sh, sw], "padding": pad}


# --- every int8 kernel against the numpy TFLite reference ------------------------------------

@SETTINGS
@given(st.data())
def test_int8_conv2d(data):
    shapes, params, attrs = conv_case(data, tflite=False)
    check_int8("conv2d", shapes, params, attrs, draw(data, 0, 2**31)[0])


@pytest.mark.parametrize("cin, cout, groups, kernel, stride, padding, dilation", [
    (5, 7, 1, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),  # pointwise: no window rows
    (3, 4, 1, (1, 1), (1, 1), (1, 0, 2, 1), (1, 1)),  # pointwise with padding
    (4, 8, 4, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),  # depthwise, stride 2, multiplier 2
    (4, 4, 4, (3, 2), (1, 1), (1, 0, 2, 1), (2, 1)),  # depthwise, stride 1: the plane path
    (2, 6, 2, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),  # planes, multiplier 3
    (1, 6, 1, (3, 2), (1, 2), (2, 0, 1, 1), (2, 1)),  # one input channel: the depthwise path
    (6, 4, 2, (2, 3), (2, 1), (0, 2, 1, 0), (1, 2)),  # grouped, dilated
])
def test_int8_conv2d_paths(cin, cout, groups, kernel, stride, padding, dilation):
    rng = np.random.default_rng(cin * cout)
    check_int8("conv2d", [(1, cin, 9, 8)],
               [randn(rng, cout, cin // groups, *kernel), randn(rng, cout)],
               {"stride": list(stride), "padding": list(padding), "dilation": list(dilation),
                "groups": groups, "activation": "relu6"}, seed=cin + cout)


@SETTINGS
@given(st.data())
def test_int8_conv1d(data):
    groups, per_in, per_out = draw(data, 1, 2, 3)
    k, stride, dilation = draw(data, 1, 4)[0], draw(data, 1, 2)[0], draw(data, 1, 2)[0]
    pad = draw(data, 0, 2, 2)
    length = max(1, dilation * (k - 1) + 1 - sum(pad)) + draw(data, 0, 6)[0]
    rng = np.random.default_rng(draw(data, 0, 2**31)[0])
    attrs = {"stride": [stride], "padding": pad, "dilation": [dilation], "groups": groups,
             "activation": data.draw(st.sampled_from(ACTIVATIONS))}
    check_int8("conv1d", [(1, groups * per_in, length)],
               [randn(rng, groups * per_out, per_in, k), randn(rng, groups * per_out)], attrs,
               draw(data, 0, 2**31)[0])


@SETTINGS
@given(st.data(), st.booleans())
def test_int8_linear(data, three_d):
    k, o = draw(data, 1, 40)[0], draw(data, 1, 9)[0]
    shape = (1, draw(data, 1, 3)[0], k) if three_d else (1, k)
    rng = np.random.default_rng(draw(data, 0, 2**31)[0])
    check_int8("linear", [shape], [randn(rng, o, k), randn(rng, o)],
               {"activation": data.draw(st.sampled_from(ACTIVATIONS))}, draw(data, 0, 2**31)[0])


@SETTINGS
@given(st.data(), st.sampled_from(["add", "mul"]), st.booleans())
def test_int8_add_mul_broadcast(data, op, y_is_activation):
    shape = (1, *draw(data, 1, 4, draw(data, 1, 3)[0]))
    rng = np.random.default_rng(draw(data, 0, 2**31)[0])
    attrs = {"activation": data.draw(st.sampled_from(ACTIVATIONS))} if op == "add" else {}
    if y_is_activation:
        check_int8(op, [shape, shape], [], attrs, draw(data, 0, 2**31)[0])
        return
    y_shape = [d if data.draw(st.booleans()) else 1 for d in shape[1:]]
    y_shape = y_shape[draw(data, 0, len(y_shape))[0]:] or [1]
    check_int8(op, [shape], [randn(rng, *y_shape)], attrs, draw(data, 0, 2**31)[0])


@SETTINGS
@given(st.data(), st.sampled_from(["relu", "relu6", "leaky_relu"]))
def test_int8_activations(data, op):
    shape = (1, *draw(data, 1, 6, draw(data, 1, 3)[0]))
    attrs = {"alpha": data.draw(st.floats(0.0, 0.5))} if op == "leaky_relu" else {}
    check_int8(op, [shape], [], attrs, draw(data, 0, 2**31)[0])


@SETTINGS
@given(st.data(), st.booleans())
def test_int8_pools(data, count_include_pad):
    shape, attrs = pool_case(data)
    seed = draw(data, 0, 2**31)[0]
    check_int8("maxpool2d", [shape], [], {**attrs, "dilation": [1, 1]}, seed)
    check_int8("avgpool2d", [shape], [], {**attrs, "count_include_pad": count_include_pad},
               seed)
    check_int8("global_avgpool", [shape], [], {}, seed)


@SETTINGS
@given(st.data())
def test_int8_reshape_concat(data):
    dims = draw(data, 1, 4, draw(data, 1, 3)[0])
    seed = draw(data, 0, 2**31)[0]
    check_int8("reshape", [(1, *dims)], [], {"shape": [int(np.prod(dims))]}, seed)
    axis = draw(data, 1, len(dims))[0]
    shapes = [(1, *(draw(data, 1, 3)[0] if i + 1 == axis else d for i, d in enumerate(dims)))
              for _ in range(draw(data, 1, 3)[0])]
    check_int8("concat", shapes, [], {"axis": axis}, seed)


@SETTINGS
@given(st.data())
def test_int8_softmax_and_layernorm_compute_in_float(data):
    shape = (1, *draw(data, 1, 6, draw(data, 1, 2)[0]))
    seed = draw(data, 0, 2**31)[0]
    rng = np.random.default_rng(seed)
    check_int8("softmax", [shape], [], {"axis": -1}, seed, tolerance=1)
    check_int8("layernorm", [shape], [randn(rng, shape[-1]), randn(rng, shape[-1])],
               {"normalized_ndim": 1, "eps": 1e-5}, seed, tolerance=1)


def test_int8_rejects_unshared_quantization_and_missing_bias():
    rng = np.random.default_rng(0)
    g, _ = int8_op_graph("maxpool2d", [(1, 2, 4, 4)], [], {"kernel": [2, 2], "stride": [2, 2]},
                         rng)
    g.tensors[g.outputs[0]].quant = QuantParams([0.5], [0])
    with pytest.raises(EdgekitError, match="maxpool2d needs its inputs and output to share"):
        Executor(g).run(np.zeros((1, 2, 4, 4), np.int8), raw=True)
    g, _ = int8_op_graph("linear", [(1, 3)], [randn(rng, 2, 3), randn(rng, 2)],
                         {"activation": "none"}, rng)
    g.nodes[0].inputs.pop()
    with pytest.raises(EdgekitError, match="needs its int32 bias"):
        Executor(g).run(np.zeros((1, 3), np.int8), raw=True)


# --- tflite-micro, bit for bit -----------------------------------------------------------------

def tflite_micro_or_skip():
    pytest.importorskip("tflite_micro")
    pytest.importorskip("flatbuffers")
    from edgekit.targets import deploy
    return deploy


@settings(max_examples=6, deadline=None)
@given(st.data(), st.sampled_from(["conv", "linear", "pools", "add", "mul", "leaky_relu"]))
def test_int8_ops_bit_exact_with_tflite_micro(data, kind):
    """Random quantization parameters, the same int8 inputs: every output value identical."""
    deploy = tflite_micro_or_skip()
    seed = draw(data, 0, 2**31)[0]
    rng = np.random.default_rng(seed)
    if kind == "conv":
        cases = [("conv2d", *conv_case(data, tflite=True))]
    elif kind == "linear":
        k, o = draw(data, 1, 40)[0], draw(data, 1, 9)[0]
        cases = [("linear", [(1, k)], [randn(rng, o, k), randn(rng, o)],
                  {"activation": data.draw(st.sampled_from(ACTIVATIONS))})]
    elif kind == "pools":
        shape, attrs = pool_case(data)
        no_pad = {**attrs, "padding": [0, 0, 0, 0]}
        cases = [("maxpool2d", [shape], [], {**attrs, "dilation": [1, 1]}),
                 ("avgpool2d", [shape], [], {**no_pad, "count_include_pad": False}),
                 ("global_avgpool", [shape], [], {})]
    elif kind in ("add", "mul"):
        shape = (1, *draw(data, 1, 5, 3))
        attrs = {"activation": data.draw(st.sampled_from(ACTIVATIONS))} if kind == "add" else {}
        cases = [(kind, [shape, shape], [], attrs),
                 (kind, [shape], [randn(rng, shape[1], 1, 1)], attrs)]
    else:
        cases = [("leaky_relu", [(1, 3, 5)], [], {"alpha": data.draw(st.floats(0.01, 0.5))})]
    for op, shapes, params, attrs in cases:
        g, xs = check_int8(op, shapes, params, attrs, seed)
        ours = Executor(g).run(xs, raw=True)
        np.testing.assert_array_equal(deploy(g, "cpu:tflite-micro").run(xs, raw=True), ours,
                                      err_msg=f"{op} {attrs}")


# --- the quantizer -----------------------------------------------------------------------------

def small_graph(seed: int = 0) -> Graph:
    """conv (no bias) -> maxpool -> two branches (relu; conv) concatenated -> flatten ->
    linear -> softmax: shared quantization, a fixed one and a created bias."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.input("x", (1, 2, 8, 8))
    c = b.node("conv2d", [x, b.param(randn(rng, 4, 2, 3, 3), "c1.w")],
               {"padding": [1, 1, 1, 1]}, name="c1")
    p = b.node("maxpool2d", [c], {"kernel": [2, 2], "stride": [2, 2]}, name="pool")
    r = b.node("relu", [p], name="relu")
    c2 = b.node("conv2d", [p, b.param(randn(rng, 4, 4, 1, 1), "c2.w"),
                           b.param(randn(rng, 4), "c2.b")], {"activation": "relu6"}, name="c2")
    y = b.node("concat", [r, c2], {"axis": 1}, name="cat")
    y = b.node("reshape", [y], {"shape": [128]}, name="flat")
    y = b.node("linear", [y, b.param(randn(rng, 5, 128) * 0.1, "fc.w"),
                          b.param(randn(rng, 5), "fc.b")], name="fc")
    b.output(b.node("softmax", [y], name="prob"))
    return b.build()


@pytest.fixture(scope="module")
def calibration():
    return np.random.default_rng(1).standard_normal((40, 2, 8, 8)).astype(np.float32)


def test_quantized_graph_follows_the_contract(calibration, tmp_path):
    g = small_graph()
    q = edgekit.quantize(g, calibration)
    assert q.metadata["quantized"] == "int8" and "quantized" not in g.metadata
    for name, info in q.tensors.items():
        if name in q.params and name.endswith(".w"):
            assert info.dtype == "int8" and info.quant.axis == 0
            assert set(info.quant.zero_point) == {0} and np.abs(q.params[name]).max() <= 127
        elif name in q.params:
            assert info.dtype == "int32" and info.quant.axis == 0
        else:
            assert info.dtype == "int8" and len(info.quant.scale) == 1
    conv = q.nodes[0]
    assert len(conv.inputs) == 3 and q.params[conv.inputs[2]].dtype == np.int32
    shared = [q.tensors[n].quant for n in ("c1", "pool", "relu", "c2", "cat", "flat")]
    assert all(s == shared[0] for s in shared)
    assert q.tensors["prob"].quant == QuantParams([1 / 256], [-128])
    for node in q.nodes[:1] + q.nodes[3:4]:  # bias scale = s_in * s_w
        s_in, s_w = q.tensors[node.inputs[0]].quant.scale[0], q.tensors[node.inputs[1]].quant.scale
        np.testing.assert_allclose(q.tensors[node.inputs[2]].quant.scale,
                                   np.float32(s_in * np.asarray(s_w)), rtol=1e-6)
    loaded = edgekit.load(q.save(tmp_path / "q.ekm"))
    x = calibration[:5]
    np.testing.assert_array_equal(Executor(loaded).run(x, raw=False), Executor(q).run(x))
    float_out = Executor(g).run(x)
    assert np.abs(Executor(q).run(x) - float_out).max() < 0.05


def test_two_inputs_and_the_remaining_ops(calibration):
    """conv1d, leaky_relu, mul by a param, add of two inputs, layernorm (float inside), avgpool:
    quantized from a dict of calibration arrays, close to float."""
    rng = np.random.default_rng(5)
    b = GraphBuilder()
    u, v = b.input("u", (1, 4, 12)), b.input("v", (1, 6, 10))
    y = b.node("conv1d", [u, b.param(randn(rng, 6, 4, 3) * 0.5, "w"), b.param(randn(rng, 6), "b")])
    y = b.node("leaky_relu", [y], {"alpha": 0.1})
    y = b.node("mul", [y, b.param(rng.uniform(0.5, 1.5, (6, 1)), "gain")])
    y = b.node("add", [y, v], {"activation": "relu"})
    y = b.node("layernorm", [y, b.param(np.ones(10), "gamma"), b.param(np.zeros(10), "beta")])
    y = b.node("reshape", [y], {"shape": [6, 2, 5]})
    b.output(b.node("avgpool2d", [y], {"kernel": [2, 2], "stride": [1, 1]}))
    g = b.build()
    data = {"v": rng.standard_normal((50, 6, 10)).astype(np.float32),
            "u": rng.standard_normal((50, 4, 12)).astype(np.float32)}
    q = edgekit.quantize(g, data, calibration="mse")
    assert q.tensors["gamma"].dtype == "float32" and q.tensors["gain"].dtype == "int8"
    test = {k: x[:8] for k, x in data.items()}
    error = np.abs(Executor(q).run(test) - Executor(g).run(test))  # layernorm magnifies steps
    assert error.mean() < 0.03 and error.max() < 0.25


def _input_range(q: Graph) -> tuple[float, float]:
    (s,), (z,) = q.tensors["x"].quant.scale, q.tensors["x"].quant.zero_point
    return (-128 - z) * s, (127 - z) * s


def test_calibration_methods_clip_outliers_differently():
    rng = np.random.default_rng(2)
    b = GraphBuilder()
    b.output(b.node("relu", [b.input("x", (1, 64))]))
    g = b.build()
    data = rng.standard_normal((2000, 64)).astype(np.float32)
    data[0, :3] = [40.0, -30.0, 35.0]  # rare outliers: 3 in 128,000 values
    ranges = {m: _input_range(edgekit.quantize(g, data, calibration=m))
              for m in ("minmax", "percentile", "mse")}
    lo, hi = ranges["minmax"]
    assert lo == pytest.approx(-30, rel=0.02) and hi == pytest.approx(40, rel=0.02)
    p_lo, p_hi = ranges["percentile"]
    assert -5 < p_lo < -2.5 and 2.5 < p_hi < 5  # 99.99th percentile of each side's magnitudes
    m_lo, m_hi = ranges["mse"]
    assert lo < m_lo < 0 < m_hi < hi
    narrow = _input_range(edgekit.quantize(g, data, calibration="percentile", percentile=99.0))
    assert narrow[1] < p_hi
    positive = edgekit.quantize(g, np.abs(data) + 1.0)  # ranges always include 0
    assert positive.tensors["x"].quant.zero_point == [-128]


def test_per_tensor_weights(calibration):
    q = edgekit.quantize(small_graph(), calibration, per_channel=False)
    for name in ("c1.w", "c2.w", "fc.w"):
        assert q.tensors[name].quant.axis is None and len(q.tensors[name].quant.scale) == 1
    np.testing.assert_allclose(Executor(q).run(calibration[:4]),
                               Executor(small_graph()).run(calibration[:4]), atol=0.1)


def test_dead_channels_and_large_biases_get_valid_scales(calibration):
    """A zero channel gets a positive scale; a bias far beyond tiny weights still fits int32."""
    rng = np.random.default_rng(3)
    w = randn(rng, 3, 2, 3, 3)
    w[1] = 0.0
    w[2] *= 1e-9
    b = GraphBuilder()
    b.output(b.node("conv2d", [b.input("x", (1, 2, 8, 8)), b.param(w, "w"),
                               b.param(np.array([0.5, 0.0, 3.0]), "b")]))
    g = b.build()
    q = edgekit.quantize(g, calibration)
    assert min(q.tensors["w"].quant.scale) > 0
    assert np.abs(q.params["b"].astype(np.int64)).max() <= 2**30
    np.testing.assert_allclose(Executor(q).run(calibration[:3])[:, 2], 3.0, atol=0.05)


def test_all_zero_tensor_gets_a_scale_and_a_warning():
    b = GraphBuilder()
    x = b.input("x", (1, 4))
    b.output(b.node("linear", [x, b.param(np.ones((2, 4)), "w"), b.param(np.zeros(2), "b")],
                    {"activation": "relu"}))
    data = -np.abs(np.random.default_rng(4).standard_normal((10, 4))).astype(np.float32)
    with pytest.warns(UserWarning, match=r"were 0 on every calibration sample; gave them the "
                                         r"range \[0.0, 1.0\]"):
        q = edgekit.quantize(b.build(), data)
    assert q.tensors[q.outputs[0]].quant == QuantParams([float(np.float32(1 / 255))], [-128])


@pytest.mark.parametrize("kwargs, data, message", [
    ({"scheme": "int2"}, None, "unknown quantization scheme 'int2'; known: int8, int4, "),
    ({"calibration": "kl"}, None, "unknown calibration 'kl'; known: minmax, percentile, mse"),
    ({"percentile": 20}, None, r"percentile must be a number in \(50, 100\]"),
    ({}, np.zeros((4, 2, 8, 7), np.float32), r"for input 'x': expected real numbers shaped "
                                             r"\(N, 2, 8, 8\), got float32 \(4, 2, 8, 7\)"),
    ({}, np.zeros((0, 2, 8, 8), np.float32), "calibration data for input 'x' is empty"),
    ({}, np.full((3, 2, 8, 8), np.nan, np.float32), "holds NaN or infinity"),
    ({}, [np.zeros((3, 2, 8, 8))] * 2, "has 2 arrays, the graph takes 1 inputs"),
    ({}, {"y": np.zeros((3, 2, 8, 8))}, r"has inputs \['y'\], the graph takes \['x'\]"),
    ({}, np.array(["a"]), "expected real numbers"),
])
def test_bad_arguments_are_explained(calibration, kwargs, data, message):
    with pytest.raises(EdgekitError, match=message):
        edgekit.quantize(small_graph(), calibration if data is None else data, **kwargs)


def test_bad_weights_and_double_quantization_are_refused(calibration):
    g = small_graph()
    g.params["fc.w"][0, 0] = np.inf
    with pytest.raises(EdgekitError, match=r"'fc\.w'.*(NaN|inf)|(NaN|inf).*'fc\.w'"):
        edgekit.quantize(g, calibration)
    q = edgekit.quantize(small_graph(), calibration)
    with pytest.raises(EdgekitError, match="already quantized"):
        edgekit.quantize(q, calibration)


def test_float_overflow_during_calibration_is_named(calibration):
    g = small_graph()
    g.params["fc.w"][:] = 1e38
    with pytest.raises(EdgekitError, match="tensor 'fc' is NaN or infinite on calibration"):
        edgekit.quantize(g, calibration)


# --- whole models ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained():
    """The reference models trained once on 16x16 digits, imported, and quantized (min/max on
    500 training images)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from edgekit import data, models

    ds = data.digits(16)
    nets = {"digits_cnn": (models.digits_cnn, 8), "mlp(256)": (lambda: models.mlp(256), 8),
            "ds_cnn": (models.ds_cnn, 15)}
    out = {}
    for name, (make, epochs) in nets.items():
        torch.manual_seed(0)  # the initial weights, whatever ran before
        net = models.train(make(), ds.x_train, ds.y_train, epochs=epochs)
        g = edgekit.from_torch(net, (torch.from_numpy(ds.x_train[:1]),))
        out[name] = (g, edgekit.quantize(g, ds.x_train[:500]))
    return ds, out


def test_int8_accuracy_within_a_point_of_float(trained):
    ds, graphs = trained
    rows = []
    for name, (g, q) in graphs.items():
        acc = {kind: float((Executor(m).run(ds.x_test).argmax(1) == ds.y_test).mean() * 100)
               for kind, m in (("float", g), ("int8", q))}
        rows.append(f"{name:>10}: float {acc['float']:.2f} %  int8 {acc['int8']:.2f} %")
        assert abs(acc["int8"] - acc["float"]) <= 1.0, rows[-1]
    print("\n" + "\n".join(rows))


def test_whole_models_bit_exact_with_tflite_micro(trained):
    deploy = tflite_micro_or_skip()
    ds, graphs = trained
    for name in ("digits_cnn", "ds_cnn"):
        q = graphs[name][1]
        x = quantize_array(ds.x_test[:40], q.tensors[q.inputs[0]].quant)
        ours = Executor(q).run_layers(x, raw=True)
        theirs = deploy(q, "cpu:tflite-micro").run_layers(x, raw=True)
        for tensor, values in ours.items():
            np.testing.assert_array_equal(theirs[tensor], values, err_msg=f"{name}: {tensor}")
    g = graphs["digits_cnn"][0]
    per_tensor = edgekit.quantize(g, ds.x_train[:200], calibration="mse", per_channel=False)
    x = quantize_array(ds.x_test[:40], per_tensor.tensors[per_tensor.inputs[0]].quant)
    np.testing.assert_array_equal(deploy(per_tensor, "cpu:tflite-micro").run(x, raw=True),
                                  Executor(per_tensor).run(x, raw=True))
