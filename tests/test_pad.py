"""The pad op beyond its conformance cell (reflect on H and W): every mode, on other ranks and
with the channel axis padded, through the runtime (float32, int8), TFLite (LiteRT, and
tflite-micro bit for bit: PAD, PADV2, MIRROR_PAD, replicate as SYMMETRIC pads), ONNX, the
emulated board, the gpu target and both importers; the firmware kernel against its numba twin;
the refusals; and the import-time fold of a zero pad into the convolution it feeds."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from test_conformance import CHECKS, Case

from edgekit.converters.builder import GraphBuilder
from edgekit.errors import EdgekitError, UnsupportedOpsError

torch = pytest.importorskip("torch")
F = torch.nn.functional
nn = torch.nn

# pads are [befores..., afters...] over the non-batch axes; F.pad's tuple runs from the last
# axis back: (w before, w after, h before, h after, ...)
MODES = {
    "constant-value-channels": Case([(2, 3, 5, 6)], attrs={"pads": [1, 0, 2, 0, 3, 1],
                                                           "value": 0.75},
                                    torch_fn=lambda x: F.pad(x, (2, 1, 0, 3, 1, 0), value=0.75)),
    "constant-zero-1d": Case([(2, 4, 7)], attrs={"pads": [0, 2, 0, 1]},
                             torch_fn=lambda x: nn.ZeroPad1d((2, 1))(x)),
    "reflect-1d": Case([(2, 3, 6)], attrs={"pads": [0, 2, 0, 3], "mode": "reflect"},
                       torch_fn=lambda x: nn.ReflectionPad1d((2, 3))(x)),
    "replicate-2d": Case([(2, 3, 4, 5)], attrs={"pads": [0, 3, 1, 0, 0, 2], "mode": "replicate"},
                         torch_fn=lambda x: nn.ReplicationPad2d((1, 2, 3, 0))(x)),
    "replicate-3d": Case([(2, 2, 3, 4, 3)], attrs={"pads": [0, 1, 0, 2, 0, 0, 2, 1],
                                                   "mode": "replicate"},
                         torch_fn=lambda x: F.pad(x, (2, 1, 0, 2, 1, 0), mode="replicate")),
}
BACKENDS = ("float32", "int8", "tflite", "onnx", "c", "gpu", "torch", "onnx_import")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", MODES)
def test_every_mode_on_every_backend(case, backend):
    """As the conformance cell checks it: against the numpy reference (int8 within a step),
    tflite-micro and the board bit for bit with the int8 runtime."""
    CHECKS[backend]("pad", MODES[case])


def _graph(shape, **attrs):
    b = GraphBuilder()
    b.output(b.node("pad", [b.input("x", shape)], attrs, name="pad"))
    return b.build()


@pytest.mark.parametrize("attrs, match", [
    ({"pads": [0, 5, 0, 0, 0, 0], "mode": "reflect"}, r"reflect pads \(5, 0\) must be smaller "
                                                      r"than axis 2 of size 5"),
    ({"pads": [0, -1, 0, 0, 1, 0]}, "negative pads"),
    ({"pads": [0, 1, 1, 0]}, "pads must be 6 ints"),
    ({"pads": [0, 1, 1, 0, 1, 1], "mode": "circular"}, "mode must be one of"),
    ({"pads": [0, 1, 1, 0, 1, 1], "mode": "replicate", "value": 2.0}, "constant' only"),
])
def test_shape_rule_refusals(attrs, match):
    with pytest.raises(EdgekitError, match=match):
        _graph((1, 3, 5, 6), **attrs)


def test_torch_circular_and_batch_padding_are_named():
    class Circular(nn.Module):
        def forward(self, x):
            return F.pad(x, (1, 1, 1, 1), mode="circular")

    class Batch(nn.Module):
        def forward(self, x):
            return F.pad(x, (0, 0, 0, 0, 0, 0, 1, 0))

    import edgekit

    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(UnsupportedOpsError, match="circular"):
        edgekit.from_torch(Circular(), x)
    with pytest.raises(UnsupportedOpsError, match="batch axis"):
        edgekit.from_torch(Batch(), x)


def test_core_aten_constant_pad_nd_imports():
    """run_decompositions() spells F.pad(value=...) as aten.constant_pad_nd."""
    import edgekit
    from edgekit.runtime import Executor

    class Pad(nn.Module):
        def forward(self, x):
            return F.pad(x, (1, 2, 0, 1), value=-0.5)

    x = torch.randn(2, 3, 4, 4)
    program = torch.export.export(Pad(), (x[:1],)).run_decompositions()
    assert "aten.constant_pad_nd.default" in {str(n.target) for n in program.graph.nodes}
    graph = edgekit.from_torch(program)
    assert [n.op for n in graph.nodes] == ["pad"]
    np.testing.assert_array_equal(Executor(graph).run(x.numpy()), Pad()(x).numpy())


@pytest.mark.parametrize("mode, pads, shape", [("reflect", (1, 2, 0, 3), (2, 3, 5, 6)),
                                                ("replicate", (2, 0, 3, 1), (2, 3, 5, 6)),
                                                ("replicate", (1, 3), (2, 3, 5))])
def test_core_aten_reflect_and_replicate_import_as_one_pad(mode, pads, shape):
    """run_decompositions() spells them as a constant index gather per axis (arange
    arithmetic): each is recognised as a pad, and the two merge into one."""
    import edgekit
    from edgekit.runtime import Executor

    class Pad(nn.Module):
        def forward(self, x):
            return F.pad(x, pads, mode=mode)

    x = torch.randn(*shape)
    program = torch.export.export(Pad(), (x[:1],)).run_decompositions()
    assert "aten.index.Tensor" in {str(n.target) for n in program.graph.nodes}
    graph = edgekit.from_torch(program)
    assert [n.op for n in graph.nodes] == ["pad"]
    np.testing.assert_array_equal(Executor(graph).run(x.numpy()), Pad()(x).numpy())


def test_other_gathers_are_not_pads():
    import edgekit

    class Gather(nn.Module):
        def forward(self, x):
            return x[:, :, torch.tensor([0, 0, 2, 1])]

    with pytest.raises(UnsupportedOpsError, match="index \\(a gather"):
        edgekit.from_torch(Gather(), torch.randn(1, 2, 4))


def _onnx_pad(opset: int, mode: str, pads, value=None, axes=None):
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.asarray(pads, np.int64), "pads")]
    names = ["x", "pads"]
    if value is not None or axes is not None:
        names.append("value" if value is not None else "")
        if value is not None:
            inits.append(numpy_helper.from_array(np.asarray(value, np.float32), "value"))
    if axes is not None:
        names.append("axes")
        inits.append(numpy_helper.from_array(np.asarray(axes, np.int64), "axes"))
    node = helper.make_node("Pad", names, ["y"], mode=mode)
    graph = helper.make_graph([node], "pad", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["n", 2, 4, 5])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, list("nchw"))], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("opset, mode, pads, value, axes, want", [
    (13, "constant", [0, 0, 1, 2, 0, 1, 0, 0], 1.5, None, {"pads": [0, 1, 2, 1, 0, 0],
                                                          "value": 1.5}),
    (13, "edge", [0, 0, 0, 3, 0, 0, 2, 0], None, None, {"pads": [0, 0, 3, 0, 2, 0],
                                                       "mode": "replicate"}),
    (18, "reflect", [1, 2, 3, 1], None, [-1, 2], {"pads": [0, 2, 1, 0, 1, 3],
                                                  "mode": "reflect"}),
])
def test_onnx_pad_imports_as_onnx_runtime_computes_it(opset, mode, pads, value, axes, want):
    """Pad as other exporters write it: pads over every axis, edge mode, opset 18's axes."""
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    import edgekit
    from edgekit.runtime import Executor

    model = _onnx_pad(opset, mode, pads, value, axes)
    graph = edgekit.from_onnx(model)
    (node,) = graph.nodes
    assert {k: node.attrs[k] for k in want} == want
    x = np.random.default_rng(0).standard_normal((3, 2, 4, 5)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(Executor(graph).run(x), session.run(None, {"x": x})[0])


def test_onnx_wrap_mode_is_named():
    import edgekit

    with pytest.raises(UnsupportedOpsError, match="wrap"):
        edgekit.from_onnx(_onnx_pad(19, "wrap", [0, 0, 1, 1, 0, 0, 1, 1]))


def test_firmware_kernel_matches_its_numba_twin(tmp_path):
    """``ek_pad_i8`` (host gcc) against ``pad4`` on random 4-D samples of every mode."""
    import shutil

    if shutil.which("gcc") is None:
        pytest.skip("no host C compiler (gcc)")
    from test_firmware_kernels import compile_library, ptr

    from edgekit.firmware_bridge.build import FIRMWARE
    from edgekit.ops.pad import MODES as CODES
    from edgekit.runtime.kernels.pad import pad4

    harness = r"""
#include "ek_kernels.h"
void host_pad(const int32_t *geometry, int8_t value, const int8_t *x, int8_t *y) {
    ek_pad_t p;
    for (int a = 0; a < 4; a++) {
        p.dims[a] = geometry[a]; p.before[a] = geometry[4 + a]; p.after[a] = geometry[8 + a];
    }
    p.mode = geometry[12]; p.value = value;
    ek_pad_i8(&p, x, y);
}
"""
    lib = compile_library(tmp_path, harness, str(FIRMWARE / "ek_pad.c"))
    rng = np.random.default_rng(0)
    for trial in range(60):
        mode = CODES[trial % 3]
        dims = rng.integers(1, 5, 4)
        limit = dims - 1 if mode == "reflect" else np.full(4, 3)
        before, after = (rng.integers(0, limit + 1) for _ in range(2))
        x = rng.integers(-128, 128, dims).astype(np.int8)
        want = np.empty(dims + before + after, np.int8)
        value = np.int8(rng.integers(-128, 128))
        pad4(x, before.astype(np.int64), CODES.index(mode), value, want)
        geometry = np.concatenate([dims, before, after, [CODES.index(mode)]]).astype(np.int32)
        got = np.empty(want.size, np.int8)
        lib.host_pad(ptr(geometry), ctypes.c_int8(int(value)), ptr(x), ptr(got))
        np.testing.assert_array_equal(got.reshape(want.shape), want, err_msg=mode)


# --- the fold into a convolution ------------------------------------------------------------

class PadConv(nn.Module):
    """TF 'same' on a stride-2 conv of an even size: zero pad after only, then the conv."""

    def __init__(self, pads=(0, 1, 0, 1), mode="constant", value=0.0, groups=1):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(4, 4 if groups > 1 else 6, 3, 2, groups=groups)
        self.pads, self.mode, self.value = pads, mode, value

    def forward(self, x):
        return self.conv(F.pad(x, self.pads, mode=self.mode, value=self.value)
                         if self.mode == "constant" else F.pad(x, self.pads, mode=self.mode))


@pytest.mark.parametrize("groups", [1, 4])
def test_zero_pad_folds_into_the_conv_and_stays_exact(groups):
    """The pad becomes the conv's asymmetric padding; float agrees with torch, and the int8
    Graph agrees with tflite-micro and the board bit for bit (they pad with the zero point)."""
    import edgekit
    from edgekit.quant import quantize_array
    from edgekit.targets import get_target

    model = PadConv(groups=groups).eval()
    x = torch.randn(3, 4, 8, 8)
    graph = edgekit.from_torch(model, x[:1])
    assert [n.op for n in graph.nodes] == ["conv2d"]
    assert graph.nodes[0].attrs["padding"] == [0, 0, 1, 1]
    with torch.no_grad():
        np.testing.assert_allclose(edgekit.deploy(graph, "cpu").run(x.numpy()),
                                   model(x).numpy(), atol=1e-5)
    q = edgekit.quantize(graph, x.numpy())
    xq = quantize_array(x.numpy(), q.tensors[q.inputs[0]].quant)
    ours = edgekit.deploy(q, "cpu").run(xq, raw=True)
    for target in ("cpu:tflite-micro", "mcu:qemu"):
        if not get_target(target).available()[0]:
            continue
        with edgekit.deploy(q, target) as session:
            theirs = np.concatenate([session.run(xq[i:i + 1], raw=True) for i in range(3)])
        np.testing.assert_array_equal(theirs, ours, err_msg=target)


@pytest.mark.parametrize("model", [
    PadConv(mode="reflect"), PadConv(value=0.5), PadConv(pads=(0, 1, 0, 1, 1, 0)),
], ids=["reflect", "nonzero", "channels"])
def test_other_pads_stay_before_the_conv(model):
    import edgekit

    x = torch.randn(1, 3 if len(model.pads) > 4 else 4, 8, 8)  # a channel padded to 4
    graph = edgekit.from_torch(model.eval(), x)
    assert [n.op for n in graph.nodes] == ["pad", "conv2d"]
    with torch.no_grad():
        np.testing.assert_allclose(edgekit.deploy(graph, "cpu").run(x.numpy()),
                                   model(x).numpy(), atol=1e-5)


@pytest.mark.parametrize("mode, pads", [("replicate", [1, 2, 0, 0, 1, 3]),
                                        ("reflect", [0, 1, 2, 0, 2, 1]),
                                        ("constant", [2, 0, 1, 1, 1, 0])])
def test_pad_between_convolutions_on_tflite(mode, pads):
    """A pad the fold leaves (another mode, or the channel axis) reads the conv's NHWC tensor
    and pads it there, without a transpose: LiteRT agrees with the reference in float,
    tflite-micro with the int8 runtime bit for bit."""
    from test_writers import _opcodes

    import edgekit
    from edgekit.converters.to_tflite import tflite_model
    from edgekit.quant import quantize_array
    from edgekit.runtime import Executor, reference
    from edgekit.targets import get_target

    rng = np.random.default_rng(0)
    b = GraphBuilder()
    x = b.node("conv2d", [b.input("x", (1, 3, 6, 6)), b.param(rng.standard_normal((4, 3, 3, 3)),
                                                              "w0")], {"activation": "relu"})
    y = b.node("pad", [x], {"pads": pads, "mode": mode, **({"value": -0.5} if mode == "constant"
                                                           else {})})
    c = b.shape(y)[1]
    b.output(b.node("conv2d", [y, b.param(rng.standard_normal((5, c, 3, 3)), "w1"),
                               b.param(rng.standard_normal(5), "b1")], {"stride": [2, 2]}))
    graph = b.build()
    assert [n.op for n in graph.nodes] == ["conv2d", "pad", "conv2d"]
    xs = rng.standard_normal((3, 3, 6, 6)).astype(np.float32)
    assert "TRANSPOSE" not in _opcodes(tflite_model(graph))

    for target in ("cpu:litert", "cpu:tflite-micro"):
        if not get_target(target).available()[0]:
            pytest.skip(f"{target} unavailable")
    want = reference.evaluate(graph, {"x": xs})[graph.outputs[0]]
    np.testing.assert_allclose(edgekit.deploy(graph, "cpu:litert").run(xs), want, atol=1e-4)
    q = edgekit.quantize(graph, xs)
    xq = quantize_array(xs, q.tensors[q.inputs[0]].quant)
    with edgekit.deploy(q, "cpu:tflite-micro") as session:
        np.testing.assert_array_equal(session.run(xq, raw=True),
                                      Executor(q).run(xq, raw=True))
