"""transpose and slice (edgekit/ops/layout.py) beyond their conformance cells: the source ops
the importers lower to them (pixel (un)shuffle, DepthToSpace/SpaceToDepth, split, chunk,
unbind, select, narrow, ONNX Split and Slice) compute what their sources compute, the six-axis
transposes of a pixel shuffle run on every int8 backend bit for bit, and a permutation that
moves the batch is refused in one line."""

from __future__ import annotations

import ctypes
import shutil

import numpy as np
import pytest

import edgekit
from edgekit.converters.builder import GraphBuilder
from edgekit.errors import EdgekitError
from edgekit.quant import quantize_array
from edgekit.targets import get_target

torch = pytest.importorskip("torch")
F = torch.nn.functional


class _Fn(torch.nn.Module):
    def __init__(self, fn, *buffers):
        super().__init__()
        self.fn = fn
        for i, b in enumerate(buffers):
            self.register_buffer(f"b{i}", b)

    def forward(self, x):
        return self.fn(x, *self.buffers())


def _import(fn, x, *buffers):
    """(the imported Graph, torch's outputs on ``x``)."""
    model = _Fn(fn, *buffers).eval()
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    graph = edgekit.from_torch(torch.export.export(model, (torch.from_numpy(x[:1]),)))
    return graph, ref


def _ops(graph) -> list[str]:
    return [n.op for n in graph.nodes]


def _x(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _shuffle_round_trip(x, scale):
    """pixel_unshuffle, a per-channel scale (so the channel order counts), pixel_shuffle."""
    return F.pixel_shuffle(F.pixel_unshuffle(x, 2) * scale, 2)


def test_pixel_shuffle_round_trip():
    x = _x(3, 2, 6, 8)
    scale = torch.arange(1.0, 9.0).reshape(1, 8, 1, 1)
    graph, ref = _import(_shuffle_round_trip, x, scale)
    assert _ops(graph) == ["reshape", "transpose", "reshape", "mul", "reshape", "transpose",
                           "reshape"]
    assert {len(graph.tensors[n.outputs[0]].shape) for n in graph.nodes
            if n.op == "transpose"} == {6}
    np.testing.assert_array_equal(edgekit.deploy(graph, "cpu").run(x), ref.numpy())
    plain, _ = _import(lambda t: F.pixel_shuffle(F.pixel_unshuffle(t, 2), 2), x)
    np.testing.assert_array_equal(edgekit.deploy(plain, "cpu").run(x), x)


def _shuffle_int8():
    x = _x(3, 2, 6, 8)
    graph, _ = _import(_shuffle_round_trip, x, torch.arange(1.0, 9.0).reshape(1, 8, 1, 1))
    q = edgekit.quantize(graph, x)
    xq = quantize_array(x, q.tensors[q.inputs[0]].quant)
    return graph, q, xq, edgekit.deploy(q, "cpu").run(xq, raw=True)


def _available(name: str):
    ok, why = get_target(name).available()
    if not ok:
        pytest.skip(f"{name}: {why}")


def test_six_axis_transposes_on_tflite():
    """tflite-micro transposes at most five axes: the writer moves pixel shuffle's six as five
    runs (the batch with the channels), exactly, in float (LiteRT, batch 3) and int8."""
    _available("cpu:litert")
    _available("cpu:tflite-micro")
    graph, q, xq, ours = _shuffle_int8()
    x = _x(3, 2, 6, 8)
    np.testing.assert_allclose(edgekit.deploy(graph, "cpu:litert").run(x),
                               edgekit.deploy(graph, "cpu").run(x), rtol=1e-6)
    np.testing.assert_array_equal(edgekit.deploy(q, "cpu:tflite-micro").run(xq, raw=True), ours)


@pytest.mark.slow
def test_six_axis_transposes_on_the_board():
    _available("mcu:qemu")
    _, q, xq, ours = _shuffle_int8()
    with edgekit.deploy(q, "mcu:qemu") as board:
        theirs = np.concatenate([board.run(xq[i:i + 1], raw=True) for i in range(2)])
    np.testing.assert_array_equal(theirs, ours[:2])


def _moves_graph():
    """An int8 chain of transposes and slices of two to six axes, some of whose axes merge
    into runs in the firmware's strided copy and some not."""
    b = GraphBuilder()
    x = b.input("x", (1, 4, 6, 5))
    y = b.node("transpose", [x], {"perm": [0, 2, 3, 1]})  # NHWC: runs do not merge
    y = b.node("slice", [y], {"starts": [1, 0, 1], "stops": [6, 5, 4], "steps": [2, 1, 2]})
    y = b.node("slice", [y], {"starts": [0, 0, 0], "stops": [3, 5, 1], "steps": [1, 1, 1]})
    y = b.node("reshape", [y], {"shape": [3, 5]})
    y = b.node("transpose", [y], {"perm": [0, 2, 1]})
    z = b.node("reshape", [x], {"shape": [1, 2, 2, 6, 5]})  # six axes, a unit one among them
    z = b.node("transpose", [z], {"perm": [0, 5, 3, 1, 2, 4]})  # (5, 2, 1, 2, 6)
    z = b.node("slice", [z], {"starts": [1, 0, 0, 0, 1], "stops": [5, 2, 1, 2, 6],
                              "steps": [3, 1, 1, 1, 2]})
    b.output(y)
    b.output(z)
    calibration = np.random.default_rng(0).standard_normal((16, 4, 6, 5)).astype(np.float32)
    return edgekit.quantize(b.build(), calibration)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no host C compiler (gcc)")
def test_firmware_strided_copy_matches_the_runtime(tmp_path):
    """ek_layout.c compiled for this host through converters.to_c's schedule, step by step."""
    from test_firmware_kernels import MODEL_HARNESS, compile_library, kernel_sources, ptr

    from edgekit.converters.to_c import to_c
    from edgekit.runtime import Executor

    graph = _moves_graph()
    to_c(graph, tmp_path)
    kernels = kernel_sources()
    lib = compile_library(tmp_path, MODEL_HARNESS, *kernels, str(tmp_path / "model.c"))
    x = _x(3, 4, 6, 5, seed=4)
    for sample in quantize_array(x, graph.tensors["x"].quant):
        ref = Executor(graph).run_layers(sample[None], raw=True)
        for step, node in enumerate(graph.nodes):
            want = ref[node.outputs[0]].reshape(-1)
            got = np.empty(want.size, np.int8)
            lib.host_run(ptr(np.ascontiguousarray(sample)), ctypes.c_uint16(step), ptr(got))
            np.testing.assert_array_equal(got, want, err_msg=f"{step} {node.op}")


def test_split_into_three_chunks():
    x = _x(2, 7, 3, 4)

    def three(t):
        a, b, c = t.chunk(3, dim=1)  # 3, 3 and 1 channels
        return torch.cat([c, a * b], 1)

    graph, ref = _import(three, x)
    assert _ops(graph).count("slice") == 3
    np.testing.assert_allclose(edgekit.deploy(graph, "cpu").run(x), ref.numpy(), rtol=1e-6)
    one, _ = _import(lambda t: t.chunk(3, dim=1)[1], x)  # pieces nobody reads: no node
    assert _ops(one) == ["slice"]


@pytest.mark.parametrize("fn", [
    lambda t: sum(t.split(2, dim=2)[::2]),
    lambda t: t.split([1, 4, 2], dim=1)[1] * 2,
    lambda t: t.tensor_split([2, 5], dim=1)[2][:, :, :2] + t.tensor_split(2, dim=2)[0][:, :2],
    lambda t: t.unbind(1)[3] - t.select(1, -1),
    lambda t: t.narrow(3, -3, 2)[:, -2:, 1:] + t[:, -2:, 1:, ::2],
    lambda t: t.movedim(1, 3).transpose(1, 2).mT,
], ids=["split", "split_with_sizes", "tensor_split", "unbind_select", "narrow_slice",
        "movedim_transpose_mT"])
def test_torch_spellings(fn):
    x = _x(2, 7, 4, 4, seed=1)
    graph, ref = _import(fn, x)
    assert set(_ops(graph)) & {"slice", "transpose"}
    np.testing.assert_allclose(edgekit.deploy(graph, "cpu").run(x), ref.numpy(), rtol=1e-6)


# --- ONNX ---------------------------------------------------------------------------------------

def _onnx_run(nodes, shape, outputs, opset=17, initializers=()):
    """(edgekit's outputs, ONNX's reference evaluator's, the Graph) of a one-input model on
    batch 2; the outputs keep the input's rank."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, *shape])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [None] * (len(shape) + 1))
         for o in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    x = _x(2, *shape, seed=2)
    want = ReferenceEvaluator(model).run(None, {"x": x})
    g = edgekit.from_onnx(model)
    got = edgekit.deploy(g, "cpu").run(x)
    return [got] if len(outputs) == 1 else got, want, g


@pytest.mark.parametrize(("opset", "split", "attrs"), [
    (13, [2, 4, 1], {}),          # sizes as an input
    (11, None, {"split": [2, 4, 1]}),  # sizes as an attribute
    (18, None, {"num_outputs": 3}),    # 3, 3, 1
])
def test_onnx_split(opset, split, attrs):
    from onnx import helper

    inputs = ["x", "sizes"] if split is not None else ["x"]
    nodes = [helper.make_node("Split", inputs, ["a", "b", "c"], axis=1, **attrs)]
    init = [("sizes", np.int64(split))] if split is not None else []
    got, want, g = _onnx_run(nodes, (7, 3), ["a", "b", "c"], opset, init)
    assert [n.op for n in g.nodes] == ["slice"] * 3
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("opset", [9, 13])
def test_onnx_slice(opset):
    """Negative starts and ends, an end past the axis, a step, two axes in one node."""
    from onnx import helper

    starts, ends, axes = [-4, 1], [2**62, -1], [1, 3]
    if opset < 10:
        nodes = [helper.make_node("Slice", ["x"], ["y"], starts=starts, ends=ends, axes=axes)]
        init = []
    else:
        nodes = [helper.make_node("Slice", ["x", "s", "e", "a", "k"], ["y"])]
        init = [("s", np.int64(starts)), ("e", np.int64(ends)), ("a", np.int64(axes)),
                ("k", np.int64([2, 1]))]
    got, want, g = _onnx_run(nodes, (7, 3, 6), ["y"], opset, init)
    assert [n.op for n in g.nodes] == ["slice"]
    np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.parametrize(("op", "mode"), [("DepthToSpace", "DCR"), ("DepthToSpace", "CRD"),
                                          ("SpaceToDepth", None)])
def test_onnx_depth_to_space(op, mode):
    from onnx import helper

    attrs = {"blocksize": 2, **({"mode": mode} if mode else {})}
    got, want, g = _onnx_run([helper.make_node(op, ["x"], ["y"], **attrs)], (8, 4, 6), ["y"])
    assert [n.op for n in g.nodes] == ["reshape", "transpose", "reshape"]
    np.testing.assert_array_equal(got[0], want[0])


# --- what the Graph cannot hold -----------------------------------------------------------------

def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "batch" in message, message
    return message


def test_moving_the_batch_is_refused_in_one_line():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 4))
    with pytest.raises(EdgekitError) as err:
        b.node("transpose", [x], {"perm": [1, 0, 2]})
    assert "perm [1, 0, 2]" in _one_line(err)
    with pytest.raises(EdgekitError) as err:
        _import(lambda t: t.transpose(0, 1), _x(1, 3, 4))
    _one_line(err)
    from onnx import helper

    with pytest.raises(EdgekitError) as err:  # Transpose's default perm reverses the axes
        _onnx_run([helper.make_node("Transpose", ["x"], ["y"])], (3, 4), ["y"])
    _one_line(err)


@pytest.mark.parametrize("attrs", [
    {"starts": [0, 0], "stops": [3, 4], "steps": [0, 1]},  # no step
    {"starts": [2, 0], "stops": [2, 4], "steps": [1, 1]},  # empty
    {"starts": [0, 0], "stops": [3, 5], "steps": [1, 1]},  # past the axis
    {"starts": [0], "stops": [3], "steps": [1]},           # one axis short
])
def test_slice_boxes_outside_the_tensor_are_refused(attrs):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 4))
    with pytest.raises(EdgekitError, match="slice"):
        b.node("slice", [x], attrs)
