"""conv_transpose2d and the 1-D pools beyond their conformance cases: torch's ConvTranspose1d/2d
(with groups, dilation, output_padding; also through core ATen's convolution) and ONNX's
ConvTranspose (uneven pads) against torch and ONNX Runtime; int8 bit for bit with tflite-micro
on each way the TFLite writer pads (SAME, VALID, VALID then SLICE) and with the firmware kernel
on the host; the refusals; the 1-D pools from torch and ONNX through float32, int8 and TFLite."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import edgekit
from edgekit.converters.builder import GraphBuilder
from edgekit.errors import EdgekitError
from edgekit.runtime import Executor

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _same_data_in_any_order():
    """Each test draws from a fresh generator: its data does not depend on which ran before."""
    global RNG
    RNG = np.random.default_rng(0)


def _torch_graph(module, *shapes, core_aten=False):
    """``module`` exported and imported (through core ATen's decompositions if asked), with
    batch-4 inputs and torch's outputs on them."""
    torch = pytest.importorskip("torch")
    xs = [RNG.standard_normal((4, *s)).astype(np.float32) for s in shapes]
    example = tuple(torch.from_numpy(x[:1]) for x in xs)
    program = torch.export.export(module.eval(), example)
    if core_aten:
        program = program.run_decompositions()
    with torch.no_grad():
        want = module(*(torch.from_numpy(x) for x in xs))
    want = [want] if isinstance(want, torch.Tensor) else list(want)
    return edgekit.from_torch(program), xs, [w.numpy() for w in want]


def _outputs(result) -> list[np.ndarray]:
    return list(result) if isinstance(result, (list, tuple)) else [result]


def _check_float(graph, xs, want):
    got = _outputs(Executor(graph).run(xs if len(xs) > 1 else xs[0]))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


class _Transposed:
    """ConvTranspose2d with groups, dilation and output_padding, a ConvTranspose1d, one
    without bias."""

    @staticmethod
    def module():
        import torch
        from torch import nn

        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.ConvTranspose2d(6, 4, 3, stride=2, padding=2, output_padding=1,
                                            groups=2, dilation=2)
                self.b = nn.ConvTranspose2d(6, 3, (2, 3), stride=(1, 2), bias=False)
                self.c = nn.ConvTranspose1d(4, 5, 4, stride=3, padding=1, output_padding=2)

            def forward(self, x, y):
                return self.a(x), torch.relu(self.b(x)), self.c(y)

        torch.manual_seed(0)
        return M()


@pytest.mark.parametrize("core_aten", [False, True], ids=["aten", "core_aten"])
def test_torch_import_matches_torch(core_aten):
    graph, xs, want = _torch_graph(_Transposed.module(), (6, 5, 5), (4, 7),
                                   core_aten=core_aten)
    assert [n.op for n in graph.nodes].count("conv_transpose2d") == 3
    _check_float(graph, xs, want)


def test_batch_norm_folds_into_the_transposed_convolution():
    """The weight is output-channels-first, so batch norm folds per row as into conv2d."""
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(3)
    module = nn.Sequential(nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, groups=2),
                           nn.BatchNorm2d(6), nn.ReLU())
    with torch.no_grad():
        module[1].running_mean.uniform_(-1, 1)
        module[1].running_var.uniform_(0.5, 2)
        module[1].weight.uniform_(-2, 2)
    graph, xs, want = _torch_graph(module, (4, 5, 5))
    assert [n.op for n in graph.nodes] == ["conv_transpose2d", "relu"]
    _check_float(graph, xs, want)


def _onnx_conv_transpose(x_shape, w, bias=None, **attrs):
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(w, "w")]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "b"))
    node = helper.make_node("ConvTranspose", ["x", "w"] + (["b"] if bias is not None else []),
                            ["y"], **attrs)
    graph = helper.make_graph(
        [node], "ct", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                       ["N", *(f"d{i}" for i in range(len(x_shape)))])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("case", [
    ((6, 5, 4), (6, 2, 3, 3), dict(strides=[2, 3], pads=[0, 1, 2, 1], output_padding=[1, 2],
                                   dilations=[1, 2], group=2)),
    ((4, 7), (4, 5, 3), dict(strides=[2], pads=[1, 0], output_padding=[1])),
    ((3, 4, 4), (3, 2, 2, 2), dict(auto_pad="VALID", strides=[2, 2])),
], ids=["2d_uneven_grouped", "1d", "valid"])
def test_onnx_import_matches_onnxruntime(case):
    ort = pytest.importorskip("onnxruntime")
    x_shape, w_shape, attrs = case
    w = RNG.standard_normal(w_shape).astype(np.float32)
    bias = RNG.standard_normal(w_shape[1] * attrs.get("group", 1)).astype(np.float32)
    model = _onnx_conv_transpose(x_shape, w, bias, **attrs)
    x = RNG.standard_normal((3, *x_shape)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": x})[0]
    graph = edgekit.from_onnx(model)
    assert "conv_transpose2d" in {n.op for n in graph.nodes}
    _check_float(graph, [x], [want])


@pytest.mark.parametrize("attrs", [dict(output_shape=[10, 10]), dict(auto_pad="SAME_UPPER")])
def test_onnx_refuses_forms_it_does_not_read(attrs):
    w = np.ones((2, 3, 3, 3), np.float32)
    with pytest.raises(EdgekitError, match="output_shape or auto_pad SAME"):
        edgekit.from_onnx(_onnx_conv_transpose((2, 5, 5), w, strides=[2, 2], **attrs))


def _graph(x_shape, w_shape, bias=True, **attrs):
    b = GraphBuilder()
    x = b.input("x", (1, *x_shape))
    inputs = [x, b.param(RNG.standard_normal(w_shape).astype(np.float32) * 0.5, "w")]
    if bias:
        inputs.append(b.param(RNG.standard_normal(w_shape[0]).astype(np.float32), "b"))
    b.output(b.node("conv_transpose2d", inputs, attrs))
    return b.build()


# Each way the TFLite writer pads: SAME (k4 s2 p1: TFLite's SAME crops 1 before), VALID with
# a longer output (output_padding), VALID then a SLICE of the top/left padding (k3 s2 p1).
TFLITE_GEOMETRIES = {
    "same": ((3, 4, 5), (5, 3, 4, 4), dict(stride=[2, 2], padding=[1, 1, 1, 1])),
    "valid": ((3, 4, 5), (5, 3, 3, 2), dict(stride=[2, 3], output_padding=[1, 2])),
    "valid_slice": ((3, 4, 5), (5, 3, 3, 3), dict(stride=[2, 2], padding=[1, 2, 0, 1],
                                                  output_padding=[1, 0])),
}


def test_tflite_geometries_take_the_padding_they_name():
    from edgekit.ops.conv_transpose import _tflite_same

    for name, (x_shape, w_shape, attrs) in TFLITE_GEOMETRIES.items():
        graph = _graph(x_shape, w_shape, **attrs)
        out = graph.tensors[graph.outputs[0]].shape[2:]
        padding = attrs.get("padding", [0] * 4)
        same = _tflite_same(x_shape[1:], out, w_shape[2:], attrs["stride"], padding[:2])
        assert same == (name == "same"), name
        if not same:
            assert (name == "valid_slice") == any(padding[:2])


def _tflite_micro_and_litert(graph, calibration, x):
    """int8: tflite-micro bit for bit with the runtime; float32: LiteRT close to it."""
    from edgekit import deploy
    from edgekit.quant import quantize_array
    from edgekit.targets import get_target

    for name in ("cpu:litert", "cpu:tflite-micro"):
        ok, why = get_target(name).available()
        if not ok:
            pytest.skip(f"{name}: {why}")
    want = _outputs(Executor(graph).run(x))
    for got, w in zip(_outputs(deploy(graph, "cpu:litert").run(x)), want, strict=True):
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-4)
    q = edgekit.quantize(graph, calibration)
    raw = quantize_array(x, q.tensors[q.inputs[0]].quant)
    ours = _outputs(Executor(q).run(raw, raw=True))
    theirs = _outputs(deploy(q, "cpu:tflite-micro").run(raw, raw=True))
    for t, o in zip(theirs, ours, strict=True):
        np.testing.assert_array_equal(t, o)
        assert len(np.unique(o)) > min(20, o.size // 2)  # not saturated to a few values
    return q


@pytest.mark.parametrize("name", sorted(TFLITE_GEOMETRIES))
def test_int8_matches_tflite_micro(name):
    x_shape, w_shape, attrs = TFLITE_GEOMETRIES[name]
    graph = _graph(x_shape, w_shape, bias=name != "valid", **attrs)  # float32: zeros written
    calibration = RNG.standard_normal((32, *x_shape)).astype(np.float32)
    _tflite_micro_and_litert(graph, calibration, calibration[:3] * 1.2)


def test_int8_1d_from_torch_matches_tflite_micro():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    module = torch.nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1)
    graph, xs, want = _torch_graph(module, (4, 9))
    _check_float(graph, xs, want)
    calibration = RNG.standard_normal((32, 4, 9)).astype(np.float32)
    _tflite_micro_and_litert(graph, calibration, xs[0])


@pytest.mark.parametrize(("channels", "attrs", "reason"), [
    (2, dict(dilation=[2, 1]), "no dilation"), (6, dict(groups=3), "no groups")])
def test_tflite_refuses_what_transpose_conv_lacks(channels, attrs, reason):
    from edgekit.converters.to_tflite import tflite_model

    with pytest.raises(EdgekitError, match=reason):
        tflite_model(_graph((channels, 4, 4), (6, 2, 3, 3), **attrs))


def test_onnx_writer_and_gpu_target_on_groups_dilation_and_uneven_padding():
    """Beyond TFLite's geometry: ONNX Runtime (float32, and int8 QDQ within a step of the
    runtime) and the gpu target's torch backend (on torch's CPU device) against the
    reference."""
    from edgekit import deploy
    from edgekit.quant import quantize_array
    from edgekit.runtime import reference
    from edgekit.targets import get_target

    graph = _graph((6, 5, 4), (8, 3, 3, 4), stride=[2, 3], padding=[2, 0, 1, 3],
                   output_padding=[1, 0], dilation=[2, 1], groups=2)
    x = RNG.standard_normal((3, 6, 5, 4)).astype(np.float32)
    want = reference.evaluate(graph, {"x": x})[graph.outputs[0]]
    _check_float(graph, [x], [want])
    pytest.importorskip("torch")
    from edgekit.targets.gpu import TorchSession

    np.testing.assert_allclose(TorchSession(graph, device="cpu").run(x), want, rtol=1e-5,
                               atol=1e-5)
    ok, why = get_target("cpu:onnxruntime").available()
    if not ok:
        pytest.skip(f"cpu:onnxruntime: {why}")
    np.testing.assert_allclose(deploy(graph, "cpu:onnxruntime").run(x), want, rtol=1e-4,
                               atol=1e-4)
    q = edgekit.quantize(graph, x)
    raw = quantize_array(x, q.tensors[q.inputs[0]].quant)
    theirs = deploy(q, "cpu:onnxruntime").run(raw, raw=True)
    assert np.abs(theirs.astype(int) - Executor(q).run(raw, raw=True)).max() <= 1


@pytest.mark.parametrize(("attrs", "message"), [
    (dict(output_padding=[2, 0]), "output_padding .* smaller than the stride"),
    (dict(output_padding=[0, -1]), "output_padding .* at least 0"),
    (dict(padding=[3, 0, 3, 0]), "crops all of"),
    (dict(groups=4), "groups=4 must divide"),
])
def test_shape_rule_refuses_impossible_geometry(attrs, message):
    with pytest.raises(EdgekitError, match=message):
        _graph((6, 2, 4), (6, 3, 3, 3), stride=[2, 1], **{"groups": 2, **attrs})


def test_firmware_kernel_matches_the_runtime(tmp_path):
    """ek_conv_transpose2d against the numba kernel on the host (gcc): groups, dilation,
    uneven padding, output_padding, input zero points at the int8 edges."""
    from test_firmware_kernels import MODEL_HARNESS, compile_library, kernel_sources, ptr

    from edgekit.converters.to_c import to_c
    from edgekit.graph import QuantParams
    from edgekit.quant import quantize_array

    attrs = dict(stride=[2, 3], padding=[2, 0, 1, 3], output_padding=[1, 0], dilation=[2, 1],
                 groups=2)
    graph = _graph((6, 5, 4), (8, 3, 3, 4), **attrs)
    x = RNG.standard_normal((12, 6, 5, 4)).astype(np.float32)
    for zero_point, shift in ((-128, 2.0), (127, -2.0)):
        q = edgekit.quantize(graph, x + shift)
        q.tensors[q.inputs[0]].quant = QuantParams([0.02], [zero_point])
        work = tmp_path / str(zero_point)  # a library of its own: dlopen reuses a loaded path
        work.mkdir()
        to_c(q, work)
        kernels = kernel_sources()
        lib = compile_library(work, MODEL_HARNESS, *kernels, str(work / "model.c"))
        raw = quantize_array(x + shift, q.tensors[q.inputs[0]].quant)
        want = Executor(q).run(raw, raw=True)
        for i in range(len(raw)):
            got = np.empty(want[i].size, np.int8)
            lib.host_run(ptr(np.ascontiguousarray(raw[i])), ctypes.c_uint16(0), ptr(got))
            np.testing.assert_array_equal(got, want[i].reshape(-1))
        assert len(np.unique(want)) > 50


# --- 1-D pools ----------------------------------------------------------------------------------

class _Pools:
    """A Conv1d, then torch's 1-D pools (and a dilated max pool, which TFLite lacks)."""

    @staticmethod
    def module(dilated: bool):
        import torch
        from torch import nn

        class Pools(nn.Module):
            def __init__(self):
                super().__init__()
                torch.manual_seed(2)
                self.conv = nn.Conv1d(3, 5, 3, padding=1)

            def forward(self, x):
                y = self.conv(x)
                pools = (nn.functional.max_pool1d(y, 3, 2, 1), nn.functional.avg_pool1d(y, 2),
                         nn.functional.adaptive_avg_pool1d(y, 1))
                return (*pools, nn.functional.max_pool1d(y, 2, 3, dilation=2)) if dilated \
                    else pools

        return Pools()


def test_1d_pools_from_torch_through_float32_int8_and_tflite():
    from edgekit.quant import dequantize_array, quantize_array

    pytest.importorskip("torch")
    graph, xs, want = _torch_graph(_Pools.module(dilated=True), (3, 12))
    ops = [n.op for n in graph.nodes]
    assert ops.count("maxpool2d") == 2 and {"avgpool2d", "global_avgpool"} <= set(ops), ops
    _check_float(graph, xs, want)
    calibration = np.concatenate([xs[0], RNG.standard_normal((32, 3, 12)).astype(np.float32)])
    q = edgekit.quantize(graph, calibration)  # nothing saturates on xs: a few steps off at most
    raw = quantize_array(xs[0], q.tensors[q.inputs[0]].quant)
    for name, got, w in zip(q.outputs, Executor(q).run(raw, raw=True), want, strict=True):
        step = q.tensors[name].quant.scale[0]
        assert np.abs(dequantize_array(got, q.tensors[name].quant) - w).max() < 4 * step
    graph, xs, _ = _torch_graph(_Pools.module(dilated=False), (3, 12))
    _tflite_micro_and_litert(graph, calibration, xs[0])


def _onnx_pool(op, **attrs):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], **attrs)], "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 11])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "L"])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("op", "attrs"), [
    ("MaxPool", dict(kernel_shape=[3], strides=[2], pads=[1, 1])),
    ("MaxPool", dict(kernel_shape=[2], strides=[1], dilations=[3])),
    ("AveragePool", dict(kernel_shape=[3], strides=[2])),
    ("AveragePool", dict(kernel_shape=[3], strides=[2], pads=[1, 1], count_include_pad=1)),
], ids=["max_padded", "max_dilated", "avg", "avg_padded"])
def test_1d_pools_from_onnx_match_onnxruntime(op, attrs):
    ort = pytest.importorskip("onnxruntime")
    model = _onnx_pool(op, **attrs)
    x = RNG.standard_normal((3, 4, 11)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": x})[0]
    graph = edgekit.from_onnx(model)
    assert [n.op for n in graph.nodes] == ["reshape", op.lower().replace("average", "avg")
                                           .replace("pool", "pool2d"), "reshape"]
    _check_float(graph, [x], [want])
    if "dilations" not in attrs and not attrs.get("count_include_pad"):  # TFLite-writable
        _tflite_micro_and_litert(graph, RNG.standard_normal((32, 4, 11)).astype(np.float32), x)
