"""matmul beyond its conformance case: attention-like products imported from torch and ONNX,
a constant right side lowered to linear, the refusals, and the firmware kernel against the
runtime on the host (gcc) with extreme zero points and broadcasting."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from edgekit.converters.builder import GraphBuilder
from edgekit.errors import EdgekitError, UnsupportedOpsError
from edgekit.ops import OPS
from edgekit.runtime import Executor


def _import(fn, *shapes, params=()):
    """``fn(*inputs, *params)`` exported from torch and imported; returns (graph, inputs,
    torch's outputs)."""
    torch = pytest.importorskip("torch")
    import edgekit

    class Call(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for i, p in enumerate(params):
                self.register_buffer(f"p{i}", torch.from_numpy(p))

        def forward(self, *inputs):
            return fn(*inputs, *self.buffers())

    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    graph = edgekit.from_torch(Call(), tuple(torch.from_numpy(x[:1]) for x in xs))
    want = Call()(*(torch.from_numpy(x) for x in xs)).numpy()
    return graph, xs, want


def _ops(graph) -> list[str]:
    return [n.op for n in graph.nodes]


def test_attention_scores_import_from_torch():
    """softmax(q @ k^T / sqrt(d)) @ v over heads: two matmuls, k transposed by a transpose."""
    torch = pytest.importorskip("torch")
    if "transpose" not in OPS:
        pytest.skip("the transpose op (k^T) is not in the op set yet")

    def attention(q, k, v):
        scores = torch.softmax(q @ k.transpose(-2, -1) / 2.0, dim=-1)
        return scores @ v

    graph, xs, want = _import(attention, (2, 2, 5, 4), (2, 2, 5, 4), (2, 2, 5, 3))
    assert _ops(graph).count("matmul") == 2 and "transpose" in _ops(graph), _ops(graph)
    np.testing.assert_allclose(Executor(graph).run(xs), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("how", ["bmm", "einsum", "einsum_ellipsis", "matmul_broadcast"])
def test_torch_products_of_activations_import_as_matmul(how):
    torch = pytest.importorskip("torch")
    fn, shapes = {
        "bmm": (torch.bmm, [(3, 4, 5), (3, 5, 2)]),
        "einsum": (lambda a, b: torch.einsum("bij,bjk->bik", a, b), [(3, 4, 5), (3, 5, 2)]),
        "einsum_ellipsis": (lambda a, b: torch.einsum("...ij,...jk->...ik", a, b),
                            [(2, 3, 4, 5), (2, 3, 5, 2)]),
        "matmul_broadcast": (torch.matmul, [(2, 1, 4, 5), (2, 3, 5, 2)]),
    }[how]
    graph, xs, want = _import(fn, *shapes)
    assert _ops(graph) == ["matmul"]
    np.testing.assert_allclose(Executor(graph).run(xs), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spelling", ["matmul", "mm"])
def test_constant_right_side_is_a_linear_layer(spelling):
    torch = pytest.importorskip("torch")
    w = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    fn = torch.matmul if spelling == "matmul" else torch.mm
    graph, xs, want = _import(lambda x, w: fn(x, w), (4, 5), params=[w])
    assert _ops(graph) == ["linear"]
    np.testing.assert_array_equal(graph.params[graph.nodes[0].inputs[1]], w.T)
    np.testing.assert_allclose(Executor(graph).run(xs), want, rtol=1e-5, atol=1e-5)


def _onnx_matmul(b_shape, constant: np.ndarray | None = None):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2, 4, 5])]
    inits = []
    if constant is None:
        inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, b_shape))
    else:
        inits.append(numpy_helper.from_array(constant, "b"))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 4, 6])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "mm", inputs,
                              [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_onnx_matmul_of_two_activations_and_of_a_constant():
    import edgekit

    rng = np.random.default_rng(2)
    a = rng.standard_normal((3, 2, 4, 5)).astype(np.float32)
    b = rng.standard_normal((3, 2, 5, 6)).astype(np.float32)
    graph = edgekit.from_onnx(_onnx_matmul(["N", 2, 5, 6]))
    assert _ops(graph) == ["matmul"]
    np.testing.assert_allclose(Executor(graph).run([a, b]), a @ b, rtol=1e-5, atol=1e-5)
    w = rng.standard_normal((5, 6)).astype(np.float32)
    graph = edgekit.from_onnx(_onnx_matmul(None, constant=w))
    assert _ops(graph) == ["linear"]
    np.testing.assert_allclose(Executor(graph).run(a), a @ w, rtol=1e-5, atol=1e-5)


def test_products_the_graph_cannot_hold_are_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(UnsupportedOpsError, match="matmul of activations of ranks 2 and 3"):
        _import(torch.matmul, (4, 5), (4, 5, 3))  # the first's rows are the batch
    with pytest.raises(UnsupportedOpsError, match="einsum 'bij,bkj->bik'"):
        _import(lambda a, b: torch.einsum("bij,bkj->bik", a, b), (3, 4, 5), (3, 2, 5))
    with pytest.raises(UnsupportedOpsError, match="matmul with a constant left operand"):
        _import(lambda x, w: torch.matmul(w, x), (3, 5, 2), params=[np.ones((4, 5), np.float32)])
    b = GraphBuilder()
    x, y = b.input("x", (1, 2, 4, 5)), b.input("y", (1, 3, 5, 6))
    with pytest.raises(EdgekitError, match="leading dims .* do not broadcast"):
        b.node("matmul", [x, y])
    with pytest.raises(EdgekitError, match="sums over 5 values of one and 4"):
        b.node("matmul", [x, b.input("z", (1, 2, 4, 6))])


def _host_model(tmp_path, q):
    """``q`` as the firmware's C, compiled for this host: ``run(sample bytes) -> int8 output``."""
    from test_firmware_kernels import MODEL_HARNESS, compile_library, kernel_sources, ptr

    from edgekit.converters.to_c import to_c

    to_c(q, tmp_path)
    kernels = kernel_sources()
    lib = compile_library(tmp_path, MODEL_HARNESS, *kernels, str(tmp_path / "model.c"))
    size = int(np.prod(q.tensors[q.outputs[0]].shape))

    def run(sample: np.ndarray) -> np.ndarray:
        got = np.empty(size, np.int8)
        lib.host_run(ptr(np.ascontiguousarray(sample)), ctypes.c_uint16(0), ptr(got))
        return got

    return run


def test_a_constant_operand_serves_every_sample(tmp_path):
    """matmul(x, constant) (a Graph file may hold one; importers make it a linear layer): the
    int8 runtime reads the constant for every sample of a batch, the firmware from flash."""
    import edgekit
    from edgekit.quant import dequantize_array, quantize_array

    rng = np.random.default_rng(6)
    b = GraphBuilder()
    w = rng.standard_normal((1, 2, 5, 3)).astype(np.float32)
    b.output(b.node("matmul", [b.input("x", (1, 2, 4, 5)), b.param(w, "w")]))
    x = rng.standard_normal((6, 2, 4, 5)).astype(np.float32)
    q = edgekit.quantize(b.build(), x)
    raw = quantize_array(x, q.tensors["x"].quant)
    got = Executor(q).run(raw, raw=True)
    out = q.tensors[q.outputs[0]].quant
    assert np.abs(dequantize_array(got, out) - x @ w).max() < 3 * out.scale[0]
    run = _host_model(tmp_path, q)
    for i in range(6):
        np.testing.assert_array_equal(run(raw[i]), got[i].reshape(-1))


def test_firmware_kernel_matches_the_runtime(tmp_path):
    """ek_matmul against int8_batch_matmul: broadcasting both ways, zero points at the int8
    edges, sums that need the full int32 range of products."""
    import edgekit
    from edgekit.graph import QuantParams
    from edgekit.quant import quantize_array

    b = GraphBuilder()
    x, y = b.input("x", (1, 3, 1, 6, 40)), b.input("y", (1, 1, 2, 40, 5))
    b.output(b.node("matmul", [x, y]))
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((16, 3, 1, 6, 40)).astype(np.float32) + 2,
          rng.standard_normal((16, 1, 2, 40, 5)).astype(np.float32) - 2]
    q = edgekit.quantize(b.build(), xs)
    q.tensors[q.inputs[0]].quant = QuantParams([0.02], [-128])  # values far from the zero points
    q.tensors[q.inputs[1]].quant = QuantParams([0.02], [127])
    run = _host_model(tmp_path, q)
    raw = [quantize_array(v, q.tensors[n].quant) for v, n in zip(xs, q.inputs, strict=True)]
    want = Executor(q).run(raw, raw=True)
    for i in range(16):
        sample = np.concatenate([raw[0][i].reshape(-1), raw[1][i].reshape(-1)])
        np.testing.assert_array_equal(run(sample), want[i].reshape(-1))
    assert len(np.unique(want)) > 50  # not saturated to a few values


# --- embedding: int32 index inputs ------------------------------------------------------------

def _embedding_graph(rows: int = 5, features: int = 3):
    b = GraphBuilder()
    table = np.arange(rows * features, dtype=np.float32).reshape(rows, features) / 4
    idx = b.input("idx", (1, 4), "int32")
    y = b.node("embedding", [idx, b.param(table, "table")])
    b.output(b.node("linear", [y, b.param(np.eye(features, dtype=np.float32), "w"),
                               b.param(np.zeros(features, np.float32), "b")]))
    return b.build(), table


def _int8_embedding():
    import edgekit

    graph, table = _embedding_graph()
    calibration = np.random.default_rng(0).integers(0, 5, (32, 4))  # int64, as numpy makes them
    return edgekit.quantize(graph, calibration), table


@pytest.mark.parametrize("target", ["cpu", "cpu:onnxruntime", "cpu:litert", "cpu:tflite-micro",
                                    "mcu:qemu"])
def test_indices_outside_the_table_are_refused_by_every_session(target):
    import edgekit
    from edgekit.targets import get_target

    ok, why = get_target(target).available()
    if not ok:
        pytest.skip(f"{target}: {why}")
    q, table = _int8_embedding()
    graph = q if target in ("cpu:tflite-micro", "mcu:qemu") else _embedding_graph()[0]
    with edgekit.deploy(graph, target) as session:
        good = np.array([[0, 4, 2, 2]], np.int64)
        np.testing.assert_allclose(session.run(good), table[good], atol=0.02)
        for bad, first in (([0, 5, 1, 1], 5), ([-1, 0, 0, 0], -1), ([2**40, 0, 0, 0], 2**40)):
            with pytest.raises(EdgekitError, match=rf"1 index\(es\) outside \[0, 5\) \(the first, "
                                                   rf"{first}, at index \(0, \d\)\)"):
                session.run(np.array([bad], np.int64))
        with pytest.raises(EdgekitError, match="expected int32 data, got float32"):
            session.run(good.astype(np.float32))


def test_kernels_clamp_what_the_edge_would_refuse(tmp_path):
    """A raw frame reaches the board without the host's check: the firmware's gather and the
    runtime's clamp an index to the table rather than read outside it."""
    from test_firmware_kernels import compile_library, ptr

    from edgekit.firmware_bridge.build import FIRMWARE
    from edgekit.runtime.kernels.matmul import gather_rows

    table = np.arange(15, dtype=np.int8).reshape(5, 3)
    indices = np.array([-(2**31), -1, 0, 4, 5, 2**31 - 1], np.int32)
    want = table[np.clip(indices, 0, 4)]
    got = np.zeros_like(want)
    gather_rows(indices, table, got)
    np.testing.assert_array_equal(got, want)
    lib = compile_library(tmp_path, '#include "ek_kernels.h"\n', str(FIRMWARE / "ek_matmul.c"))
    got = np.zeros_like(want)
    lib.ek_gather_rows(ctypes.c_int32(6), ctypes.c_int32(5), ctypes.c_int32(3), ptr(indices),
                       ptr(table), ptr(got))
    np.testing.assert_array_equal(got, want)


def test_index_inputs_are_checked_where_the_graph_is():
    """An int32 input feeds embedding's indices and nothing else; embedding's indices are
    int32; the quantizer leaves them alone and they survive a save and load."""
    import edgekit

    b = GraphBuilder()
    with pytest.raises(EdgekitError, match="int32 indices go to the first input of an indexed"):
        b.output(b.node("relu", [b.input("idx", (1, 4), "int32")]))
        b.build()
    b = GraphBuilder()
    with pytest.raises(EdgekitError, match="int32 indices go to the first input of an indexed"):
        y = b.node("embedding", [b.input("x", (1, 4)), b.param(np.ones((5, 3)), "t")])
        b.output(y)
        b.build()
    q, _ = _int8_embedding()
    assert (q.tensors["idx"].dtype, q.tensors["idx"].quant) == ("int32", None)
    table = q.tensors[q.nodes[0].inputs[1]]
    assert table.dtype == "int8" and table.quant.axis is None
    assert q.tensors[q.nodes[0].outputs[0]].quant.to_json() == table.quant.to_json()
    with pytest.raises(EdgekitError, match="expected integer indices, got float32"):
        edgekit.quantize(_embedding_graph()[0], np.zeros((3, 4), np.float32))


def test_embedding_from_torch_and_onnx(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    import edgekit

    net = torch.nn.Sequential(torch.nn.Embedding(7, 4), torch.nn.Flatten(), torch.nn.Linear(12, 2))
    idx = np.random.default_rng(4).integers(0, 7, (5, 3))
    graph = edgekit.from_torch(net, (torch.from_numpy(idx[:1]),))
    assert _ops(graph) == ["embedding", "reshape", "linear"], _ops(graph)
    assert graph.tensors[graph.inputs[0]].dtype == "int32"
    with torch.no_grad():
        want = net(torch.from_numpy(idx)).numpy()
    np.testing.assert_allclose(Executor(graph).run(idx), want, rtol=1e-5, atol=1e-5)

    table = np.random.default_rng(5).standard_normal((7, 4)).astype(np.float32)
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["y"], axis=0)], "gather",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4])],
        [numpy_helper.from_array(table, "table")]),
        opset_imports=[helper.make_opsetid("", 17)])
    graph = edgekit.from_onnx(model)
    assert _ops(graph) == ["embedding"]
    np.testing.assert_array_equal(Executor(graph).run(idx), table[idx])


def test_cli_runs_an_embedding_and_refuses_a_bad_index_in_one_line(tmp_path):
    import os
    import subprocess
    import sys

    graph, table = _embedding_graph()
    graph.save(tmp_path / "emb.ekm")
    np.save(tmp_path / "good.npy", np.array([[0, 1, 2, 4]]))
    np.save(tmp_path / "bad.npy", np.array([[0, 1, 2, 9]]))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "edgekit.cli", *args], capture_output=True,
                              text=True, env=env, timeout=300)

    ok = cli("run", str(tmp_path / "emb.ekm"), "--input", str(tmp_path / "good.npy"), "--output",
             str(tmp_path / "y.npy"))
    assert ok.returncode == 0, ok.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), table[[[0, 1, 2, 4]]], atol=1e-6)
    bad = cli("run", str(tmp_path / "emb.ekm"), "--input", str(tmp_path / "bad.npy"))
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "outside [0, 5)" in bad.stderr


def test_profile_feeds_indices_to_an_embedding_model():
    """Profiling without inputs feeds index 0 (valid in any table), not random floats the
    Session would refuse; the layer is counted in its table's dtype."""
    from edgekit.profile import profile

    q, _ = _int8_embedding()
    report = profile(q, "cpu", runs=2, warmup=1)
    assert [(la["op"], la["dtype"]) for la in report.data["layers"]] == [("embedding", "int8"),
                                                                        ("linear", "int8")]


def test_core_aten_matmul_imports_as_matmul():
    """A .pt2 saved after run_decompositions() spells a 3-D matmul expand/view/bmm/view; the
    expands to the operands' own shapes are no-ops, the views keep the batch."""
    torch = pytest.importorskip("torch")
    import edgekit

    class Product(torch.nn.Module):
        def forward(self, a, b):
            return torch.matmul(a, b)

    a, b = torch.randn(1, 4, 5), torch.randn(1, 5, 3)
    program = torch.export.export(Product(), (a, b)).run_decompositions()
    graph = edgekit.from_torch(program)
    assert _ops(graph) == ["matmul"]
    np.testing.assert_allclose(Executor(graph).run([a.numpy(), b.numpy()]), (a @ b).numpy(),
                               rtol=1e-5, atol=1e-5)
