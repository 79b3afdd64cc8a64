"""Graph -> ONNX (opset 17), built with ``onnx.helper``; the batch dimension is symbolic.

Float Graphs map op for op (a fused activation becomes a Relu or Clip node after its producer).
int8 Graphs (``docs/quantized-graph.md``) become a QDQ model, the form ONNX Runtime's
optimizer fuses into integer kernels: the model's inputs and outputs are the Graph's int8
tensors; every int8 activation is the output of a QuantizeLinear and is read through a
DequantizeLinear; weights are int8 initializers and biases int32 initializers, each behind a
(per-axis) DequantizeLinear. The visitors below therefore only ever see float tensors: the
emitter hands them float views of their inputs and quantizes their float result.
Measured with ONNX Runtime 1.32: it fuses the QDQ convolutions, Gemms, pools and leaky ReLUs
inside the model into QLinear kernels, but leaves a convolution fed by a graph input or
feeding a graph output as DequantizeLinear -> Conv -> QuantizeLinear (exact, only slower).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_write_bytes
from edgekit.graph import Graph, Node
from edgekit.ops import implementation

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; ONNX Runtime reads it everywhere
BATCH = "batch"


def to_onnx(graph: Graph, path: str | Path) -> Path:
    """Write ``graph`` as an ``.onnx`` file."""
    path = Path(path)
    atomic_write_bytes(path, onnx_model(graph).SerializeToString())
    return path


def onnx_model(graph: Graph, extra_outputs: Sequence[str] = ()) -> Any:
    """The Graph as an ``onnx.ModelProto``; ``extra_outputs`` names intermediate Graph tensors
    to expose as outputs too (per-layer parity checks)."""
    if importlib.util.find_spec("onnx") is None:
        raise EdgekitError("writing ONNX needs the onnx package: pip install 'edgekit[onnx]'")
    graph.validate()
    unsupported = [f"{n.op} ({n.name or n.outputs[0]})" for n in graph.nodes
                   if _visitor(n.op) is None]
    if unsupported:
        raise EdgekitError(f"cannot write to ONNX, no ONNX mapping for: {', '.join(unsupported)}")
    emitter = _Emitter(graph)
    for node in graph.nodes:
        emitter.visit(node)
    outputs = [*graph.outputs, *(n for n in extra_outputs if n not in graph.outputs)]
    return emitter.model(graph.metadata.get("name", "edgekit"),
                         [emitter.value_info(n) for n in outputs])


class _Emitter:
    """Collects ONNX nodes and initializers; owns the float view of every Graph tensor."""

    def __init__(self, graph: Graph):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.graph = graph
        self.int8 = graph.metadata.get("quantized") == "int8"
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.floats: dict[str, str] = {}
        self.count = 0

    def model(self, name: str, outputs: list[Any]) -> Any:
        """The checked ``onnx.ModelProto`` of the nodes emitted so far, the Graph's inputs in
        and ``outputs`` (value infos) out."""
        import onnx
        from onnx import helper

        onnx_graph = helper.make_graph(self.nodes, name,
                                       [self.value_info(n) for n in self.graph.inputs], outputs,
                                       self.initializers)
        model = helper.make_model(onnx_graph, producer_name="edgekit",
                                  opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model, full_check=True)
        return model

    def value_info(self, name: str) -> Any:
        info = self.graph.tensors[name]
        elem = self.helper.np_dtype_to_tensor_dtype(np.dtype(info.dtype))
        return self.helper.make_tensor_value_info(name, elem, [BATCH, *info.shape[1:]])

    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"{hint}/{self.count}"

    def add(self, op_type: str, inputs: list[str], output: str | None = None,
            **attrs: Any) -> str:
        """Append one ONNX node; returns its (single) output's name."""
        output = output or self.fresh(op_type)
        self.nodes.append(self.helper.make_node(op_type, inputs, [output],
                                                name=self.fresh(op_type), **attrs))
        return output

    def const(self, value: np.ndarray, name: str | None = None) -> str:
        name = name or self.fresh("const")
        self.initializers.append(self.numpy_helper.from_array(np.asarray(value, order="C"), name))
        return name

    def float_in(self, name: str) -> str:
        """A float tensor holding Graph tensor ``name`` (made once, on first use)."""
        if name not in self.floats:
            self.floats[name] = (self._param(name) if name in self.graph.params
                                 else self._dequantize(name, self.graph.tensors[name].quant)
                                 if self.int8 else name)
        return self.floats[name]

    def _param(self, name: str) -> str:
        value, quant = self.graph.params[name], self.graph.tensors[name].quant
        stored = self.const(value, name)
        if value.dtype == np.float32:
            return stored
        return self._dequantize(stored, quant, quant.axis, value.dtype)

    def _dequantize(self, stored: str, quant: Any, axis: int | None = None,
                    dtype: Any = np.int8) -> str:
        """DequantizeLinear of ``stored``: per axis, or per tensor with scalar parameters."""
        per_axis = axis is not None
        scale = np.asarray(quant.scale if per_axis else quant.scale[0], np.float32)
        zero = np.asarray(quant.zero_point if per_axis else quant.zero_point[0], dtype)
        attrs = {"axis": axis} if per_axis else {}
        return self.add("DequantizeLinear", [stored, self.const(scale), self.const(zero)],
                        f"{stored}/dq", **attrs)

    def activate(self, y: str, activation: str) -> str:
        """``y`` through a fused activation (none, relu, relu6)."""
        return _activate(self, y, activation)

    def visit(self, node: Node) -> None:
        """Run the op's visitor on float views; for int8, quantize its result to the output."""
        out = node.outputs[0]
        y = _visitor(node.op)(self, node, [self.float_in(n) for n in node.inputs])
        if not self.int8:  # every visitor ends with the node that computes its result
            self._rename(out)
            return
        q = self.graph.tensors[out].quant
        self.add("QuantizeLinear", [y, self.const(np.float32(q.scale[0])),
                                    self.const(np.int8(q.zero_point[0]))], out)

    def _rename(self, name: str) -> None:
        """Give the last node's output (the visitor's result) the Graph tensor's name."""
        self.nodes[-1].output[0] = name


# --- visitors: float views in, the float result's name out -----------------------------------

def _activate(e: _Emitter, y: str, activation: str) -> str:
    if activation == "relu":
        return e.add("Relu", [y])
    if activation == "relu6":
        return e.add("Clip", [y, e.const(np.float32(0)), e.const(np.float32(6))])
    return y


def _conv(e: _Emitter, node: Node, ins: list[str]) -> str:
    """Conv for 1-D and 2-D: the Graph's padding order (begins, then ends) is ONNX's."""
    a = node.attrs
    y = e.add("Conv", ins, strides=a["stride"], pads=a["padding"], dilations=a["dilation"],
              group=a["groups"])
    return _activate(e, y, a["activation"])


def _linear(e: _Emitter, node: Node, ins: list[str]) -> str:
    """Gemm for [N, in] inputs; MatMul (on the transposed weight) + Add for higher ranks."""
    if len(e.graph.tensors[node.inputs[0]].shape) == 2:
        y = e.add("Gemm", ins, transB=1)
    else:
        y = e.add("MatMul", [ins[0], e.add("Transpose", [ins[1]], perm=[1, 0])])
        y = e.add("Add", [y, ins[2]]) if len(ins) > 2 else y
    return _activate(e, y, node.attrs["activation"])


def _visitor(op: str) -> Callable[..., str] | None:
    impl = implementation(op, "onnx")
    return impl.fn if impl else _VISITORS.get(op)


def _simple(op_type: str, **attrs: Callable[[Node], Any]) -> Callable[..., str]:
    """An op whose ONNX form is one node; ``attrs`` compute its attributes from the Graph node,
    and a fused ``activation`` attribute follows as its own node."""
    def visit(e: _Emitter, node: Node, ins: list[str]) -> str:
        y = e.add(op_type, ins, **{k: f(node) for k, f in attrs.items()})
        return _activate(e, y, node.attrs.get("activation", "none"))
    return visit


def _reshape(e: _Emitter, node: Node, ins: list[str]) -> str:
    shape = np.asarray([-1, *node.attrs["shape"]], np.int64)
    return e.add("Reshape", [ins[0], e.const(shape)])


def _attr(key: str) -> Callable[[Node], Any]:
    return lambda n: n.attrs[key]


_VISITORS: dict[str, Callable[..., str]] = {
    "conv2d": _conv,
    "conv1d": _conv,
    "linear": _linear,
    "add": _simple("Add"),
    "mul": _simple("Mul"),
    "maxpool2d": _simple("MaxPool", kernel_shape=_attr("kernel"), strides=_attr("stride"),
                         pads=_attr("padding"), dilations=_attr("dilation")),
    "avgpool2d": _simple("AveragePool", kernel_shape=_attr("kernel"), strides=_attr("stride"),
                         pads=_attr("padding"),
                         count_include_pad=lambda n: int(n.attrs["count_include_pad"])),
    "global_avgpool": _simple("GlobalAveragePool"),
    "reshape": _reshape,
    "concat": _simple("Concat", axis=_attr("axis")),
    "softmax": _simple("Softmax", axis=_attr("axis")),
    "layernorm": _simple("LayerNormalization", axis=lambda n: -n.attrs["normalized_ndim"],
                         epsilon=lambda n: float(n.attrs["eps"])),
}
