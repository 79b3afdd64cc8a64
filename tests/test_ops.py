"""Every op's numba kernel, run through the executor on a one-node graph, against torch and the
numpy reference, over random shapes and attributes (batch sizes above 1 included)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit.converters.builder import GraphBuilder
from edgekit.ops import ACTIVATIONS
from edgekit.runtime import Executor, reference

torch = pytest.importorskip("torch")
F = torch.nn.functional

SETTINGS = settings(max_examples=20, deadline=None)
TORCH_ACT = {"none": lambda y: y, "relu": F.relu, "relu6": F.relu6}


def check(op, acts, params=(), attrs=None, torch_fn=None):
    """Run ``op`` on activations ``acts`` (leading batch dim) and ``params`` through the executor
    and compare with ``torch_fn(*acts, *params)`` and with the reference, within rtol 1e-5 and an
    atol of 1e-5 of the output's magnitude, or of 1 where outputs are smaller: inputs are of unit
    scale, and a sum of unit-scale terms that cancels to near zero carries float32 rounding of
    the terms, not of the result (seen: 1.5e-6 on an output of 1e-2 from 54 terms)."""
    b = GraphBuilder()
    names = [b.input(f"x{i}", a.shape) for i, a in enumerate(acts)]
    names += [b.param(p, f"p{i}") for i, p in enumerate(params)]
    b.output(b.node(op, names, attrs))
    graph = b.build()
    got = Executor(graph).run(list(acts))
    with torch.no_grad():
        want = torch_fn(*(torch.from_numpy(a) for a in (*acts, *params))).numpy()
    ref = reference.evaluate(graph, dict(zip(graph.inputs, acts, strict=True)))[graph.outputs[0]]
    for expected in (want, ref):
        assert got.shape == expected.shape and got.dtype == np.float32
        atol = 1e-5 * max(float(np.abs(expected).max()), 1.0)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=atol)


def randn(data, *shape, scale=1.0):
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    return np.asarray(np.random.default_rng(seed).standard_normal(shape) * scale, np.float32)


def ints(data, lo, hi, n=1):
    return [data.draw(st.integers(lo, hi)) for _ in range(n)]


def fitting_size(data, k, dilation, pad):
    """An input size that a window of k taps at this dilation fits after padding."""
    return max(1, dilation * (k - 1) + 1 - pad) + data.draw(st.integers(0, 5))


@SETTINGS
@given(st.data(), st.booleans(), st.booleans(), st.sampled_from(ACTIVATIONS))
def test_conv2d(data, depthwise, with_bias, activation):
    if depthwise:
        groups = cin = ints(data, 1, 4)[0]
        cout = cin * ints(data, 1, 2)[0]
    else:
        groups, per_in, per_out = ints(data, 1, 3, 3)
        cin, cout = groups * per_in, groups * per_out
    kh, kw, sh, sw = ints(data, 1, 3, 4)
    dh, dw = ints(data, 1, 2, 2)
    pt, pl, pb, pr = ints(data, 0, 2, 4)
    h, w = fitting_size(data, kh, dh, pt + pb), fitting_size(data, kw, dw, pl + pr)
    params = [randn(data, cout, cin // groups, kh, kw)] + [randn(data, cout)] * with_bias
    attrs = {"stride": [sh, sw], "padding": [pt, pl, pb, pr], "dilation": [dh, dw],
             "groups": groups, "activation": activation}
    check("conv2d", [randn(data, ints(data, 1, 2)[0], cin, h, w)], params, attrs,
          lambda x, wt, b=None: TORCH_ACT[activation](
              F.conv2d(F.pad(x, (pl, pr, pt, pb)), wt, b, (sh, sw), 0, (dh, dw), groups)))


@SETTINGS
@given(st.data(), st.booleans(), st.sampled_from(ACTIVATIONS))
def test_conv1d(data, with_bias, activation):
    groups, per_in, per_out = ints(data, 1, 3, 3)
    k, stride, dilation = ints(data, 1, 5)[0], ints(data, 1, 3)[0], ints(data, 1, 2)[0]
    left, right = ints(data, 0, 3, 2)
    length = fitting_size(data, k, dilation, left + right)
    cout = groups * per_out
    params = [randn(data, cout, per_in, k)] + [randn(data, cout)] * with_bias
    attrs = {"stride": [stride], "padding": [left, right], "dilation": [dilation],
             "groups": groups, "activation": activation}
    check("conv1d", [randn(data, ints(data, 1, 2)[0], groups * per_in, length)], params, attrs,
          lambda x, wt, b=None: TORCH_ACT[activation](
              F.conv1d(F.pad(x, (left, right)), wt, b, stride, 0, dilation, groups)))


@SETTINGS
@given(st.data(), st.booleans(), st.booleans(), st.sampled_from(ACTIVATIONS))
def test_linear(data, three_d, with_bias, activation):
    n, k, o = ints(data, 1, 3)[0], ints(data, 1, 70)[0], ints(data, 1, 9)[0]
    shape = (n, ints(data, 1, 4)[0], k) if three_d else (n, k)
    params = [randn(data, o, k)] + [randn(data, o)] * with_bias
    check("linear", [randn(data, *shape)], params, {"activation": activation},
          lambda x, wt, b=None: TORCH_ACT[activation](F.linear(x, wt, b)))


def pool_case(data, dilation=(1, 1)):
    """(x, kernel, stride, padding): padding at most half the kernel on each side, as torch needs,
    and an input no smaller than the window, so no window lies wholly in the padding."""
    kh, kw, sh, sw = ints(data, 1, 3, 4)
    pt, pb = ints(data, 0, kh // 2, 2)
    pl, pr = ints(data, 0, kw // 2, 2)
    x = randn(data, ints(data, 1, 2)[0], ints(data, 1, 3)[0],
              fitting_size(data, kh, dilation[0], 0), fitting_size(data, kw, dilation[1], 0))
    return x, [kh, kw], [sh, sw], [pt, pl, pb, pr]


@SETTINGS
@given(st.data())
def test_maxpool2d(data):
    dilation = ints(data, 1, 2, 2)
    x, kernel, stride, (pt, pl, pb, pr) = pool_case(data, dilation)
    attrs = {"kernel": kernel, "stride": stride, "padding": [pt, pl, pb, pr], "dilation": dilation}
    check("maxpool2d", [x], (), attrs, lambda t: F.max_pool2d(
        F.pad(t, (pl, pr, pt, pb), value=-np.inf), kernel, stride, 0, dilation))


@SETTINGS
@given(st.data(), st.booleans())
def test_avgpool2d(data, count_include_pad):
    x, kernel, stride, (pt, pl, pb, pr) = pool_case(data)
    if not count_include_pad:  # torch pads symmetrically; only counted padding can be explicit
        pb, pr = pt, pl
    attrs = {"kernel": kernel, "stride": stride, "padding": [pt, pl, pb, pr],
             "count_include_pad": count_include_pad}
    sym_h, sym_w = min(pt, pb), min(pl, pr)
    check("avgpool2d", [x], (), attrs, lambda t: F.avg_pool2d(
        F.pad(t, (pl - sym_w, pr - sym_w, pt - sym_h, pb - sym_h)), kernel, stride,
        (sym_h, sym_w), count_include_pad=count_include_pad))


@SETTINGS
@given(st.data())
def test_global_avgpool(data):
    x = randn(data, *ints(data, 1, 3, 2), *ints(data, 1, 9, 2))
    check("global_avgpool", [x], (), {}, lambda t: F.adaptive_avg_pool2d(t, 1))


@SETTINGS
@given(st.data(), st.sampled_from(["add", "mul"]), st.booleans())
def test_binary_broadcast(data, op, y_is_activation):
    shape = (ints(data, 1, 3)[0], *ints(data, 1, 4, ints(data, 1, 3)[0]))
    x = randn(data, *shape)
    attrs = {"activation": data.draw(st.sampled_from(ACTIVATIONS))} if op == "add" else {}
    act = TORCH_ACT[attrs.get("activation", "none")]
    fn = (lambda a, b: act(a + b)) if op == "add" else (lambda a, b: a * b)
    if y_is_activation:
        check(op, [x, randn(data, *shape)], (), attrs, fn)
        return
    y_shape = [d if data.draw(st.booleans()) else 1 for d in shape[1:]]
    y_shape = y_shape[data.draw(st.integers(0, len(y_shape))):]
    if len(y_shape) == len(shape) - 1 and data.draw(st.booleans()):
        y_shape = [1, *y_shape]  # full rank, broadcast along the batch
    check(op, [x], [randn(data, *y_shape)], attrs, fn)


@SETTINGS
@given(st.data(), st.sampled_from(["relu", "relu6", "leaky_relu"]))
def test_activations(data, op):
    x = randn(data, ints(data, 1, 3)[0], *ints(data, 1, 6, ints(data, 1, 3)[0]), scale=5.0)
    alpha = data.draw(st.floats(0.0, 0.5))
    attrs = {"alpha": alpha} if op == "leaky_relu" else {}
    torch_fn = {"relu": F.relu, "relu6": F.relu6,
                "leaky_relu": lambda t: F.leaky_relu(t, alpha)}[op]
    check(op, [x], (), attrs, torch_fn)


@SETTINGS
@given(st.data())
def test_softmax(data):
    rank = ints(data, 2, 4)[0]
    x = randn(data, *ints(data, 1, 5, rank), scale=4.0)
    axis = data.draw(st.sampled_from([*range(1, rank), *range(-rank + 1, 0)]))
    check("softmax", [x], (), {"axis": axis}, lambda t: F.softmax(t, axis))


@SETTINGS
@given(st.data(), st.sampled_from([1, 2]))
def test_layernorm(data, k):
    shape = ints(data, 1, 6, k + ints(data, 1, 2)[0])
    gamma, beta = randn(data, *shape[-k:]), randn(data, *shape[-k:])
    x = randn(data, *shape, scale=3.0) + 1.5
    check("layernorm", [x], [gamma, beta], {"normalized_ndim": k, "eps": 1e-5},
          lambda t, g, b: F.layer_norm(t, t.shape[-k:], g, b, 1e-5))


@SETTINGS
@given(st.data())
def test_reshape(data):
    dims = ints(data, 1, 4, ints(data, 1, 3)[0])
    x = randn(data, ints(data, 1, 3)[0], *dims)
    target = data.draw(st.permutations(dims))
    if len(target) > 1 and data.draw(st.booleans()):
        target = [target[0] * target[1], *target[2:]]
    check("reshape", [x], (), {"shape": list(target)}, lambda t: t.reshape(t.shape[0], *target))


@SETTINGS
@given(st.data())
def test_concat(data):
    rank, n_inputs = ints(data, 2, 4)[0], ints(data, 1, 3)[0]
    axis = data.draw(st.sampled_from([*range(1, rank), *range(-rank + 1, 0)]))
    shape = [ints(data, 1, 3)[0], *ints(data, 1, 4, rank - 1)]
    xs = []
    for _ in range(n_inputs):
        shape[axis] = ints(data, 1, 4)[0]
        xs.append(randn(data, *shape))
    check("concat", xs, (), {"axis": axis}, lambda *ts: torch.cat(ts, axis))
