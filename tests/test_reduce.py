"""reduce_mean, reduce_sum, reduce_max and log_softmax beyond their conformance cells: several
axis sets with keepdims both ways through every backend (the runtime, tflite-micro and the
board bit for bit with it), int8 log_softmax against tflite-micro over input scales from fine to
coarse, the firmware kernels against the runtime compiled for this host, both importers, and
the refusal of a reduction over the batch axis."""

from __future__ import annotations

import ctypes
import shutil

import numpy as np
import pytest
from test_conformance import CHECKS, SLOW, Case

import edgekit
from edgekit.converters.builder import GraphBuilder
from edgekit.errors import EdgekitError, UnsupportedOpsError
from edgekit.runtime import Executor

torch = pytest.importorskip("torch")
F = torch.nn.functional

CASES = {
    # over H and W of NCHW, kept: the importers give global_avgpool for this one
    "mean-hw-keep": ("reduce_mean", Case([(2, 3, 4, 5)], attrs={"axes": [2, 3],
                                                                "keepdims": True})),
    "mean-all": ("reduce_mean", Case([(2, 3, 16, 16)], attrs={"axes": [1, 2, 3]},
                                     torch_fn=lambda x: x.mean((1, 2, 3)))),
    "mean-negative-keep": ("reduce_mean", Case([(2, 5, 7)], attrs={"axes": [-2],
                                                                   "keepdims": True},
                                               torch_fn=lambda x: x.mean(-2, keepdim=True))),
    "sum-channels": ("reduce_sum", Case([(2, 6, 4, 4)], attrs={"axes": [1]},
                                        torch_fn=lambda x: x.sum(1))),
    "sum-c-w-keep": ("reduce_sum", Case([(2, 3, 4, 5)], attrs={"axes": [1, 3], "keepdims": True},
                                        torch_fn=lambda x: x.sum((1, 3), keepdim=True))),
    "max-c-w-keep": ("reduce_max", Case([(2, 3, 4, 5)], attrs={"axes": [3, 1], "keepdims": True},
                                        torch_fn=lambda x: x.amax((1, 3), keepdim=True))),
    "max-dim-values": ("reduce_max", Case([(2, 4, 6)], attrs={"axes": [2]},
                                          torch_fn=lambda x: x.max(2).values)),
    "max-last-2d": ("reduce_max", Case([(3, 9)], attrs={"axes": [-1]},
                                       torch_fn=lambda x: torch.amax(x, -1))),
    "log-softmax-classes": ("log_softmax", Case([(2, 1000)], torch_fn=lambda x: F.log_softmax(
        x, -1))),
    "log-softmax-h": ("log_softmax", Case([(2, 3, 5, 4)], attrs={"axis": 2},
                                          torch_fn=lambda x: F.log_softmax(x, 2))),
}
BACKENDS = ("float32", "int8", "tflite", "onnx", "c", "gpu", "torch", "onnx_import")
IMPORTERS = ("torch", "onnx_import")


def _cells():
    for name in CASES:
        for backend in BACKENDS:
            if backend in IMPORTERS and name == "mean-hw-keep":
                continue  # imported as global_avgpool (test_onnx_reductions_import..., test_import)
            marks = [pytest.mark.slow] if backend in SLOW else []
            yield pytest.param(name, backend, id=f"{name}-{backend}", marks=marks)


@pytest.mark.parametrize(("name", "backend"), list(_cells()))
def test_axis_sets_on_every_backend(name, backend):
    """As the conformance cell checks it: against the numpy reference (int8 within a step),
    tflite-micro and the board bit for bit with the int8 runtime."""
    op, case = CASES[name]
    CHECKS[backend](op, case)


def _graph(op, shape, **attrs):
    b = GraphBuilder()
    b.output(b.node(op, [b.input("x", shape)], attrs, name=op))
    return b.build()


@pytest.mark.parametrize("spread", [0.02, 1.0, 40.0])
def test_int8_log_softmax_is_tflite_micro_bit_for_bit(spread):
    """Input scales from 2^-12 to about 1 step per unit: which differences count in the sum
    and which outputs fall to -128 move with the scale (diff_min, the reverse bound)."""
    from edgekit.quant import quantize_array
    from edgekit.targets import get_target

    target = get_target("cpu:tflite-micro")
    ok, why = target.available()
    if not ok:
        pytest.skip(f"cpu:tflite-micro: {why}")
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((64, 4, 37)) * spread).astype(np.float32)
    x[:8, :, :5] += 6 * spread  # a few dominant classes: most outputs near -128
    q = edgekit.quantize(_graph("log_softmax", (1, 4, 37), axis=-1), x)
    raw = quantize_array(x, q.tensors["x"].quant)
    ours = edgekit.deploy(q, "cpu").run(raw, raw=True)
    theirs = edgekit.deploy(q, "cpu:tflite-micro").run(raw, raw=True)
    np.testing.assert_array_equal(theirs, ours)
    assert len(np.unique(ours)) >= 4  # the outputs are spread, not saturated


def _all_reductions():
    """One int8 Graph: log_softmax and every reduction of one input (several outputs)."""
    b = GraphBuilder()
    x = b.input("x", (1, 4, 6, 5))
    b.output(b.node("log_softmax", [x], {"axis": 2}))
    b.output(b.node("reduce_mean", [x], {"axes": [1, 3], "keepdims": True}))
    b.output(b.node("reduce_sum", [x], {"axes": [2]}))
    b.output(b.node("reduce_max", [x], {"axes": [-1, 1]}))
    calibration = np.random.default_rng(0).standard_normal((32, 4, 6, 5)).astype(np.float32)
    return edgekit.quantize(b.build(), calibration)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no host C compiler (gcc)")
def test_firmware_kernels_match_the_runtime(tmp_path):
    """ek_reduce.c compiled for this host through converters.to_c's schedule, step by step."""
    from test_firmware_kernels import MODEL_HARNESS, compile_library, ptr

    from edgekit.converters.to_c import to_c
    from edgekit.firmware_bridge.build import FIRMWARE
    from edgekit.quant import quantize_array

    graph = _all_reductions()
    to_c(graph, tmp_path)
    lib = compile_library(tmp_path, MODEL_HARNESS, str(FIRMWARE / "ek_reduce.c"),
                          str(tmp_path / "model.c"))
    x = np.random.default_rng(1).standard_normal((10, 4, 6, 5)).astype(np.float32) * 2
    for sample in quantize_array(x, graph.tensors["x"].quant):
        ref = Executor(graph).run_layers(sample[None], raw=True)
        for step, node in enumerate(graph.nodes):
            want = ref[node.outputs[0]].reshape(-1)
            got = np.empty(want.size, np.int8)
            lib.host_run(ptr(np.ascontiguousarray(sample)), ctypes.c_uint16(step), ptr(got))
            np.testing.assert_array_equal(got, want, err_msg=node.op)


def _import_torch(fn, shape):
    class Fn(torch.nn.Module):
        def forward(self, x):
            return fn(x)

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    graph = edgekit.from_torch(Fn(), (x[:1],))
    return graph, x


def test_torch_reductions_import_as_their_ops():
    def fn(x):
        return (x.mean(1), x.sum((1, 3), keepdim=True), x.amax(-1), torch.max(x, 2).values,
                torch.max(x, 1, keepdim=True)[0], F.log_softmax(x, -1), x.mean((-1, -2)))

    graph, x = _import_torch(fn, (3, 4, 5, 6))
    assert [n.op for n in graph.nodes] == ["reduce_mean", "reduce_sum", "reduce_max",
                                           "reduce_max", "reduce_max", "log_softmax",
                                           "global_avgpool", "reshape"]
    got = Executor(graph).run(x.numpy())
    for mine, theirs in zip(got, fn(x), strict=True):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-5, atol=1e-5)


def test_torch_max_with_indices_used_is_refused():
    with pytest.raises(UnsupportedOpsError, match="indices"):
        _import_torch(lambda x: torch.max(x, 1).indices.float(), (2, 4, 5))


@pytest.mark.parametrize("fn", [lambda x: x.mean(), lambda x: x.sum(0), lambda x: x.amax((0, 1)),
                                lambda x: torch.max(x)], ids=["mean", "sum0", "amax01", "max"])
def test_torch_reduction_over_the_batch_is_one_error_line(fn):
    with pytest.raises(EdgekitError, match="over the batch axis") as info:
        _import_torch(fn, (2, 4, 5))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("axes", [[0], [0, 2], [-3]])
def test_reduction_over_the_batch_axis_is_refused(axes):
    with pytest.raises(EdgekitError, match="over the batch axis") as info:
        _graph("reduce_sum", (1, 4, 5), axes=axes)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("axes, match", [([], "non-empty"), ([3], "out of range"),
                                         ([1, -2], "twice"), ([1.0], "list of ints")])
def test_bad_axes_are_refused(axes, match):
    with pytest.raises(EdgekitError, match=match):
        _graph("reduce_max", (1, 4, 5), axes=axes)


def _onnx_model(node, shape, out_shape, opset, initializers=()):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [node], "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, *shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(v, k) for k, v in initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _axes(values):
    return ("axes", np.asarray(values, np.int64))


ONNX_CASES = {  # node, attributes, opset, initializers, the Graph op, the output's shape
    "mean-attr-13": (("ReduceMean", ["x"]), {"axes": [1, -1], "keepdims": 0}, 13, (),
                     "reduce_mean", [None, 4]),
    "sum-input-13": (("ReduceSum", ["x", "axes"]), {"keepdims": 1}, 13, (_axes([2]),),
                     "reduce_sum", [None, 3, 1, 5]),
    "max-attr-13": (("ReduceMax", ["x"]), {"axes": [3]}, 13, (), "reduce_max",
                    [None, 3, 4, 1]),
    "max-input-18": (("ReduceMax", ["x", "axes"]), {"keepdims": 0}, 18, (_axes([1, 2]),),
                     "reduce_max", [None, 5]),
    "mean-input-18": (("ReduceMean", ["x", "axes"]), {}, 18, (_axes([-3]),), "reduce_mean",
                      [None, 1, 4, 5]),
    "mean-hw-keep": (("ReduceMean", ["x"]), {"axes": [2, 3]}, 13, (), "global_avgpool",
                     [None, 3, 1, 1]),
    "log-softmax": (("LogSoftmax", ["x"]), {"axis": 2}, 13, (), "log_softmax",
                    [None, 3, 4, 5]),
}


@pytest.mark.parametrize("name", ONNX_CASES)
def test_onnx_reductions_import_as_onnxruntime_computes(name):
    ort = pytest.importorskip("onnxruntime")
    from onnx import helper

    (op_type, inputs), attrs, opset, inits, op, out_shape = ONNX_CASES[name]
    node = helper.make_node(op_type, inputs, ["y"], **attrs)
    model = _onnx_model(node, (3, 4, 5), out_shape, opset, inits)
    graph = edgekit.from_onnx(model)
    assert op in [n.op for n in graph.nodes]
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = session.run(None, {"x": x})
    np.testing.assert_allclose(Executor(graph).run(x), want, rtol=1e-5, atol=1e-5)


def test_onnx_reduction_without_axes_is_refused():
    from onnx import helper

    model = _onnx_model(helper.make_node("ReduceMean", ["x"], ["y"], keepdims=0), (3, 4), [],
                        13)
    with pytest.raises(EdgekitError, match="over the batch axis") as info:
        edgekit.from_onnx(model)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("dim, shape", [(-1, (3, 4, 6)), (1, (2, 8, 3, 3))])
def test_glu_imports_as_two_slices_a_sigmoid_and_a_mul(dim, shape):
    graph, x = _import_torch(lambda x: F.glu(x, dim), shape)
    assert [n.op for n in graph.nodes] == ["slice", "slice", "sigmoid", "mul"]
    np.testing.assert_allclose(Executor(graph).run(x.numpy()), F.glu(x, dim).numpy(), rtol=1e-5,
                               atol=1e-6)


def test_int8_glu_is_tflite_micro_bit_for_bit():
    from edgekit.quant import quantize_array
    from edgekit.targets import get_target

    ok, why = get_target("cpu:tflite-micro").available()
    if not ok:
        pytest.skip(f"cpu:tflite-micro: {why}")
    graph, x = _import_torch(lambda x: torch.nn.GLU(1)(x), (16, 6, 5))
    q = edgekit.quantize(graph, x.numpy())
    raw = quantize_array(x.numpy(), q.tensors[q.inputs[0]].quant)
    np.testing.assert_array_equal(edgekit.deploy(q, "cpu:tflite-micro").run(raw, raw=True),
                                  edgekit.deploy(q, "cpu").run(raw, raw=True))


def test_glu_over_the_batch_is_refused():
    class Fn(torch.nn.Module):
        def forward(self, x):
            return F.glu(x, 0)

    with pytest.raises(UnsupportedOpsError, match="glu across the batch"):
        edgekit.from_torch(Fn(), (torch.randn(2, 4),))


def test_tflite_reads_channels_last_tensors_with_the_axes_moved():
    """After a conv the TFLite writer holds tensors NHWC: the reductions' axes, the layout of
    an output without keepdims and log_softmax's axis follow it (LiteRT in float32, tflite-micro
    bit for bit in int8)."""
    from edgekit.quant import quantize_array
    from edgekit.targets import get_target

    for name in ("cpu:litert", "cpu:tflite-micro"):
        ok, why = get_target(name).available()
        if not ok:
            pytest.skip(f"{name}: {why}")
    rng = np.random.default_rng(4)
    b = GraphBuilder()
    x = b.input("x", (1, 3, 6, 5))
    y = b.node("conv2d", [x, b.param(rng.standard_normal((4, 3, 3, 3)) * 0.3, "w"),
                          b.param(np.zeros(4), "b")], {"padding": [1, 1, 1, 1]})
    b.output(b.node("reduce_sum", [y], {"axes": [1, 3]}))
    b.output(b.node("reduce_max", [y], {"axes": [2], "keepdims": True}))
    b.output(b.node("reduce_mean", [y], {"axes": [1]}))
    b.output(b.node("log_softmax", [y], {"axis": 1}))
    graph = b.build()
    xs = rng.standard_normal((8, 3, 6, 5)).astype(np.float32)
    want = Executor(graph).run(xs)
    for got, ref in zip(edgekit.deploy(graph, "cpu:litert").run(xs), want, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    q = edgekit.quantize(graph, xs)
    raw = quantize_array(xs, q.tensors["x"].quant)
    ours = edgekit.deploy(q, "cpu").run(raw, raw=True)
    theirs = edgekit.deploy(q, "cpu:tflite-micro").run(raw, raw=True)
    for a, b_ in zip(theirs, ours, strict=True):
        np.testing.assert_array_equal(a, b_)
