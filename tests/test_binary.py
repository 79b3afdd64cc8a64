"""The binary family beyond its conformance cells: numpy broadcasting of both operands on every
backend (float32, int8, tflite-micro bit for bit, ONNX Runtime, the emulated board), int8 DIV
against tflite-micro over every pair of stored values, clip with one bound, the importers
(torch.export and ONNX) for every new op, the lowering of constants (sub and div by a constant
stay add and mul), the firmware kernels against their numba twins, and the refusals."""

from __future__ import annotations

import ctypes
import shutil

import numpy as np
import pytest
from test_conformance import CHECKS, Case

import edgekit
from edgekit.converters.builder import GraphBuilder
from edgekit.errors import EdgekitError
from edgekit.ops.elementwise import broadcast_layout
from edgekit.runtime import Executor

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (op, case): operands that both broadcast, on ranks 3 and 4, with and without an activation
MUTUAL = {
    "add-3d": ("add", Case([(2, 3, 1), (2, 1, 4)], torch_fn=lambda x, y: x + y)),
    "add-relu6-4d": ("add", Case([(2, 1, 4, 5), (2, 3, 1, 5)], attrs={"activation": "relu6"},
                                 torch_fn=lambda x, y: F.relu6(x + y))),
    "mul-4d": ("mul", Case([(2, 1, 4, 1), (2, 3, 1, 5)], torch_fn=lambda x, y: x * y)),
    "sub-3d": ("sub", Case([(2, 1, 6), (2, 4, 1)], torch_fn=lambda x, y: x - y)),
    "div-3d": ("div", Case([(2, 3, 1), (2, 1, 4)], torch_fn=lambda x, y: x / y,
                           positive_inputs=True)),
    "maximum-4d": ("maximum", Case([(2, 3, 1, 5), (2, 1, 4, 1)],
                                   torch_fn=lambda x, y: torch.maximum(x, y))),
    "minimum-3d": ("minimum", Case([(2, 3, 1), (2, 1, 4)],
                                   torch_fn=lambda x, y: torch.minimum(x, y))),
}
FAST = ("float32", "int8", "tflite", "onnx", "gpu", "torch", "onnx_import")


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("case", MUTUAL)
def test_mutual_broadcasting(case, backend):
    op, c = MUTUAL[case]
    CHECKS[backend](op, c)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["add-relu6-4d", "mul-4d", "sub-3d", "div-3d", "maximum-4d"])
def test_mutual_broadcasting_on_the_board(case):
    op, c = MUTUAL[case]
    CHECKS["c"](op, c)


def test_broadcast_layout_merges_runs_of_axes():
    dims, xs, ys = broadcast_layout((1, 3, 4, 5), (1, 3, 1, 1), (1, 1, 4, 5))
    assert dims.tolist() == [3, 20] and xs.tolist() == [1, 0] and ys.tolist() == [0, 1]
    dims, xs, ys = broadcast_layout((1, 2, 3, 4), (1, 2, 3, 4), (4,))
    assert dims.tolist() == [6, 4] and xs.tolist() == [4, 1] and ys.tolist() == [0, 1]
    dims, xs, ys = broadcast_layout((1, 1), (1, 1), (1,))
    assert dims.tolist() == [1] and xs.tolist() == [0] and ys.tolist() == [0]


# --- clip ----------------------------------------------------------------------------------

CLIPS = {
    "min-only": Case([(2, 3, 5, 5)], attrs={"min": -0.25},
                     torch_fn=lambda x: torch.clamp(x, min=-0.25)),
    "max-only": Case([(2, 6)], attrs={"max": 0.5}, torch_fn=lambda x: torch.clamp(x, max=0.5)),
    "n1-to-1": Case([(2, 7)], attrs={"min": -1.0, "max": 1.0},
                    torch_fn=lambda x: F.hardtanh(x)),
}


@pytest.mark.parametrize("backend", [*FAST, "learn"])
@pytest.mark.parametrize("case", CLIPS)
def test_clip_with_any_bounds(case, backend):
    CHECKS[backend]("clip", CLIPS[case])


@pytest.mark.slow
def test_clip_with_one_bound_on_the_board():
    CHECKS["c"]("clip", CLIPS["max-only"])


@pytest.mark.parametrize("fn, ops", [
    (lambda x: F.hardtanh(x, 0.0, 6.0), ["relu6"]),
    (lambda x: torch.clamp(x, 0.0, 6.0), ["relu6"]),
    (lambda x: torch.clamp(x, min=0.0), ["relu"]),
    (lambda x: torch.clamp_max(x, 2.0), ["clip"]),
    (lambda x: F.relu6(x), ["relu6"]),
    (lambda x: torch.clamp(x, torch.full((4,), -0.5), torch.linspace(0.5, 2, 4)),
     ["maximum", "minimum"]),
], ids=["hardtanh-0-6", "clamp-0-6", "clamp-min-0", "clamp_max", "relu6", "tensor-bounds"])
def test_torch_clamps_keep_relu_forms(fn, ops):
    class M(torch.nn.Module):
        def forward(self, x):
            return fn(x)

    graph = edgekit.from_torch(M(), (torch.randn(1, 3, 4),))
    assert [n.op for n in graph.nodes] == ops
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32) * 4
    np.testing.assert_allclose(Executor(graph).run(x), fn(torch.from_numpy(x)).numpy())


def test_clip_refuses_crossed_or_infinite_bounds():
    for attrs, match in (({"min": 2.0, "max": 1.0}, "min 2.0 is above max 1.0"),
                         ({"min": float("nan")}, "min must be a finite number")):
        b = GraphBuilder()
        with pytest.raises(EdgekitError, match=match):
            b.output(b.node("clip", [b.input("x", (1, 4))], attrs))


# --- importers ------------------------------------------------------------------------------

class _Ops(torch.nn.Module):
    """Every new op of the family between two inputs and constants."""

    def __init__(self):
        super().__init__()
        self.prelu = torch.nn.PReLU(3)
        with torch.no_grad():
            self.prelu.weight.copy_(torch.tensor([0.1, -0.3, 0.7]))

    def forward(self, x, y):
        a = torch.maximum(x - y, torch.minimum(x, y) / (y * y + 1))
        b = torch.clamp(2.0 - a, min=-0.5) / 4.0 - 1.0
        return self.prelu(torch.clamp(b, -1.2, 0.9) * torch.maximum(x, torch.tensor(0.1)))


def test_torch_export_imports_every_new_op():
    model = _Ops().eval()
    x, y = (torch.randn(1, 3, 1, 5), torch.randn(1, 1, 4, 5))
    graph = edgekit.from_torch(model, (x, y))
    ops = [n.op for n in graph.nodes]
    for op in ("sub", "div", "maximum", "minimum", "clip", "prelu"):
        assert op in ops, ops
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((3, 3, 1, 5)).astype(np.float32),
          rng.standard_normal((3, 1, 4, 5)).astype(np.float32)]
    want = model(*map(torch.from_numpy, xs)).detach().numpy()
    np.testing.assert_allclose(Executor(graph).run(xs), want, rtol=1e-5, atol=1e-6)


def test_sub_and_div_by_constants_stay_add_and_mul():
    """x - c is x + (-c) exactly and foldable, x / c a mul by 1 / c; c - x and c / x keep the
    constant first."""

    class M(torch.nn.Module):
        def forward(self, x):
            return (3.0 - (x - 2.0) / 4.0) / (x * x + 1) + 1.0 / (x * x + 2)

    graph = edgekit.from_torch(M(), (torch.randn(1, 5),))
    ops = [(n.op, n.inputs[0] in graph.params) for n in graph.nodes]
    assert ("sub", True) in ops and ("div", True) in ops, ops
    assert [op for op, _ in ops].count("add") >= 2 and ("mul", False) in ops, ops
    x = np.random.default_rng(2).standard_normal((4, 5)).astype(np.float32)
    np.testing.assert_allclose(Executor(graph).run(x), M()(torch.from_numpy(x)).numpy(),
                               rtol=1e-6)


def test_div_by_a_tensor_on_float32_and_int8():
    """Both operands activations: float32 as torch computes it, int8 bit for bit on
    tflite-micro."""
    from edgekit.targets import get_target

    class M(torch.nn.Module):
        def forward(self, x, y):
            return x / y

    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((8, 2, 6)).astype(np.float32),
          rng.uniform(0.5, 2.0, (8, 2, 6)).astype(np.float32)]
    graph = edgekit.from_torch(M(), tuple(torch.from_numpy(v[:1]) for v in xs))
    assert [n.op for n in graph.nodes] == ["div"]
    np.testing.assert_allclose(Executor(graph).run(xs), xs[0] / xs[1], rtol=1e-6)
    q = edgekit.quantize(graph, xs)
    ok, why = get_target("cpu:tflite-micro").available()
    if not ok:
        pytest.skip(why)
    raw = [edgekit.quant.quantize_array(v, q.tensors[n].quant) for v, n in zip(xs, q.inputs)]
    np.testing.assert_array_equal(edgekit.deploy(q, "cpu:tflite-micro").run(raw, raw=True),
                                  edgekit.deploy(q, "cpu").run(raw, raw=True))


def _onnx_model(nodes, inputs, output, consts, out_shape=None):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, "binary",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, ["N", *s]) for k, s in inputs],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT,
                                       ["N", *(out_shape or inputs[0][1])])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_onnx_imports_every_new_op():
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import helper

    n = helper.make_node
    model = _onnx_model(
        [n("Sub", ["x", "y"], ["s"]), n("Div", ["s", "two"], ["d"]),
         n("Div", ["one", "d"], ["r"]), n("Max", ["x", "y", "r"], ["m"]),
         n("Min", ["m", "y"], ["mn"]), n("Clip", ["mn", "lo"], ["c"]),
         n("PRelu", ["c", "slope"], ["out"])],
        [("x", [3, 1, 5]), ("y", [1, 4, 5])], "out",
        {"two": 2.0, "one": 1.0, "lo": -0.75, "slope": np.array([0.2, -0.1, 0.5]).reshape(3, 1, 1)},
        [3, 4, 5])
    graph = edgekit.from_onnx(model)
    ops = [n.op for n in graph.nodes]
    for op in ("sub", "div", "maximum", "minimum", "clip", "prelu"):
        assert op in ops, ops
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((2, 3, 1, 5)).astype(np.float32),
          rng.standard_normal((2, 1, 4, 5)).astype(np.float32)]
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": xs[0], "y": xs[1]})[0]
    np.testing.assert_allclose(Executor(graph).run(xs), want, rtol=1e-5, atol=1e-6)


def test_onnx_prelu_slope_must_follow_the_channels():
    pytest.importorskip("onnx")
    from onnx import helper

    model = _onnx_model([helper.make_node("PRelu", ["x", "slope"], ["out"], name="p")],
                        [("x", [3, 5])], "out", {"slope": np.ones(5)})
    with pytest.raises(EdgekitError, match=r"PRelu with a slope of shape \[5\]"):
        edgekit.from_onnx(model)


# --- int8 DIV over every pair of stored values ----------------------------------------------

def _div_int8():
    """An int8 div of two (1, 256) inputs quantized from [-3, 5] and [-2, 4] (zero points off
    0; the output from [-12, 20]), and raw inputs pairing every stored dividend with every
    divisor but the zero point."""
    b = GraphBuilder()
    b.output(b.node("div", [b.input("x", (1, 256)), b.input("y", (1, 256))], name="div"))
    rows = np.array([[-3.0, 5.0, 5.0, -3.0], [-2.0, 4.0, 0.25, 0.25]], np.float32)
    q = edgekit.quantize(b.build(), [np.repeat(v[:, None], 256, 1) for v in rows])
    zy = int(q.tensors["y"].quant.zero_point[0])
    divisors = np.array([v for v in range(-128, 128) if v != zy], np.int8)
    x = np.tile(np.arange(-128, 128, dtype=np.int8), len(divisors)).reshape(-1, 256)
    y = np.repeat(divisors, 256).reshape(-1, 256)
    return q, [x, y]


def test_int8_div_matches_tflite_micro_on_every_pair():
    from edgekit.targets import get_target

    ok, why = get_target("cpu:tflite-micro").available()
    if not ok:
        pytest.skip(why)
    q, raw = _div_int8()
    ours = edgekit.deploy(q, "cpu").run(raw, raw=True)
    np.testing.assert_array_equal(edgekit.deploy(q, "cpu:tflite-micro").run(raw, raw=True), ours)
    sx, sy, so = (q.tensors[n].quant for n in ("x", "y", "div"))
    v1, v2 = raw[0].astype(int) - sx.zero_point[0], raw[1].astype(int) - sy.zero_point[0]
    real = v1 * sx.scale[0] / (v2 * sy.scale[0])
    # within a step of the real quotient where it fits, except for dividends of a few steps
    # over large divisors, where TFLite's own final shift passes 31 bits and wraps
    fits = (np.abs(real / so.scale[0] + so.zero_point[0]) < 127) & (np.abs(v1) >= 8)
    got = (ours.astype(int) - so.zero_point[0]) * so.scale[0]
    assert np.abs(got - real)[fits].max() <= so.scale[0]


# --- firmware kernels against their numba twins ---------------------------------------------

HARNESS = r"""
#include "ek_kernels.h"
void host_binary(int32_t op, const int32_t *layout, const int32_t *q, const int8_t *x,
                 const int8_t *y, int8_t *out) {
    ek_binary_t p;
    p.size = layout[0]; p.ndims = layout[1];
    for (int a = 0; a < 6; a++) {
        p.dims[a] = layout[2 + a]; p.x_strides[a] = layout[8 + a]; p.y_strides[a] = layout[14 + a];
    }
    p.zx = q[0]; p.zy = q[1]; p.zo = q[2]; p.lo = q[3]; p.hi = q[4];
    for (int k = 0; k < 3; k++) { p.mult[k] = q[5 + k]; p.shift[k] = q[8 + k]; }
    void (*kernels[])(const ek_binary_t *, const int8_t *, const int8_t *, int8_t *) =
        {ek_add, ek_sub, ek_mul, ek_div, ek_maximum, ek_minimum, ek_prelu};
    kernels[op](&p, x, y, out);
}
"""


def test_firmware_kernels_match_their_numba_twins(tmp_path):
    """ek_add/sub/mul/div/maximum/minimum/prelu (host gcc) against the int8 runtime's kernels
    on random shapes where both operands broadcast."""
    if shutil.which("gcc") is None:
        pytest.skip("no host C compiler (gcc)")
    from test_firmware_kernels import compile_library, ptr

    from edgekit.firmware_bridge.build import FIRMWARE
    from edgekit.graph import QuantParams
    from edgekit.numerics import params as P
    from edgekit.runtime.kernels import int8_elementwise as K

    lib = compile_library(tmp_path, HARNESS, str(FIRMWARE / "ek_kernels.c"),
                          str(FIRMWARE / "ek_binary.c"))
    rng = np.random.default_rng(5)
    for trial in range(70):
        op = trial % 7
        out_shape = tuple(int(d) for d in rng.integers(1, 5, 4))
        x_shape, y_shape = (tuple(d if rng.random() < 0.6 else 1 for d in out_shape)
                            for _ in range(2))
        out_shape = tuple(max(a, b) for a, b in zip(x_shape, y_shape))
        x = rng.integers(-128, 128, x_shape).astype(np.int8)
        y = rng.integers(-128, 128, y_shape).astype(np.int8)
        quant = [QuantParams([float(rng.uniform(0.01, 0.1))], [int(rng.integers(-20, 20))])
                 for _ in range(3)]
        layout = broadcast_layout(out_shape, x_shape, y_shape)
        want = np.empty(out_shape, np.int8)
        args = (x.reshape(-1), y.reshape(-1), *layout)
        if op in (0, 1):
            p = P.add_params(quant, "relu")
            K.add(*args, 1 - 2 * op, p.zx, p.zy, p.zo, np.array(p.mult, np.int32),
                  np.array(p.shift, np.int32), p.lo, p.hi, want.reshape(-1))
            fields = [p.zx, p.zy, p.zo, p.lo, p.hi, *p.mult, *p.shift]
        elif op in (2, 3):
            p = P.mul_params(quant) if op == 2 else P.div_params(quant)
            (K.mul if op == 2 else K.div)(*args, p.zx, p.zy, p.zo, p.mult, p.shift, p.lo, p.hi,
                                          want.reshape(-1))
            fields = [p.zx, p.zy, p.zo, p.lo, p.hi, p.mult, 0, 0, p.shift, 0, 0]
        elif op in (4, 5):
            K.select(*args, op == 4, want.reshape(-1))
            fields = [0] * 11
        else:
            p = P.prelu_params(quant[0], quant[2], rng.standard_normal(3))
            K.prelu(*args, p.zx, p.zo, p.m_id, p.s_id, p.m_alpha, p.s_alpha, want.reshape(-1))
            fields = [p.zx, 0, p.zo, -128, 127, p.m_id, p.m_alpha, 0, p.s_id, p.s_alpha, 0]
        dims, xs, ys = (np.pad(a, (0, 6 - a.size), constant_values=1) for a in layout)
        geometry = np.array([want.size, layout[0].size, *dims, *xs, *ys], np.int32)
        got = np.empty(want.size, np.int8)
        lib.host_binary(ctypes.c_int32(op), ptr(geometry), ptr(np.array(fields, np.int32)),
                        ptr(x), ptr(y), ptr(got))
        np.testing.assert_array_equal(got.reshape(out_shape), want, err_msg=f"op {op}")


# --- refusals -------------------------------------------------------------------------------

def test_an_activation_operand_needs_the_outputs_rank():
    b = GraphBuilder()
    x, y = b.input("x", (1, 3, 4)), b.input("y", (1, 4))
    with pytest.raises(EdgekitError, match="needs the output's rank"):
        b.output(b.node("maximum", [x, y]))
        b.build()


def test_a_constant_may_not_broadcast_along_the_batch():
    b = GraphBuilder()
    with pytest.raises(EdgekitError, match="along the batch axis"):
        b.node("sub", [b.input("x", (1, 4)), b.param(np.ones((3, 4), np.float32), "c")])
