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
from edgekit.ops.backends import ONNX_DOMAIN
from edgekit.quant.lowbit import dequantized

from . import lowbit_writers

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
    packed = graph
    if lowbit_writers.require(graph, "onnx"):  # written from their values, then packed
        graph = dequantized(graph)
    emitter = _Emitter(graph)
    for node in graph.nodes:
        emitter.visit(node)
    outputs = [*graph.outputs, *(n for n in extra_outputs if n not in graph.outputs)]
    model = emitter.model(graph.metadata.get("name", "edgekit"),
                          [emitter.value_info(n) for n in outputs])
    return lowbit_writers.onnx_weights(model, packed) if packed is not graph else model


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
        self.functions: dict[str, Any] = {}
        self.count = 0

    def model(self, name: str, outputs: list[Any]) -> Any:
        """The checked ``onnx.ModelProto`` of the nodes emitted so far, the Graph's inputs in
        and ``outputs`` (value infos) out."""
        import onnx
        from onnx import helper

        onnx_graph = helper.make_graph(self.nodes, name,
                                       [self.value_info(n) for n in self.graph.inputs], outputs,
                                       self.initializers)
        opsets = [helper.make_opsetid("", OPSET)]
        if self.functions:
            opsets.append(helper.make_opsetid(ONNX_DOMAIN, 1))
        model = helper.make_model(onnx_graph, producer_name="edgekit", opset_imports=opsets,
                                  functions=list(self.functions.values()))
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

    def function(self, op_type: str, inputs: list[str], body: Callable[[FunctionBody, str], str],
                 **attrs: Any) -> str:
        """A node of op type ``op_type`` in edgekit's domain (``ONNX_DOMAIN``), for an op ONNX
        lacks: the model defines it once as a function whose nodes ``body(f, x)`` makes and
        returns the result of; the node carries ``attrs``, which the body reads with ``f.attr``
        (so an importer reads the op back whole, and ONNX Runtime inlines the body)."""
        if op_type not in self.functions:
            f = FunctionBody(self.helper)
            f.result(body(f, "x"))
            self.functions[op_type] = self.helper.make_function(
                ONNX_DOMAIN, op_type, ["x"], ["y"], f.nodes,
                [self.helper.make_opsetid("", OPSET)], attributes=sorted(attrs))
        output = self.fresh(op_type)
        self.nodes.append(self.helper.make_node(op_type, inputs, [output], domain=ONNX_DOMAIN,
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
                                 if self.int8 and self.graph.tensors[name].quant else name)
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


class FunctionBody:
    """The nodes of a function ``_Emitter.function`` defines: ``add`` appends one (inputs are
    names or Python floats, which become scalar constants), ``attr`` is a float attribute of
    the calling node, and the body returns the name of its result."""

    def __init__(self, helper: Any):
        self.helper, self.nodes = helper, []
        self.names: dict[Any, str] = {}

    def add(self, op_type: str, *inputs: str | float, **attrs: Any) -> str:
        output = f"t{len(self.nodes)}"
        names = [v if isinstance(v, str) else self.const(v) for v in inputs]
        self.nodes.append(self.helper.make_node(op_type, names, [output], **attrs))
        return output

    def const(self, value: float) -> str:
        from onnx import TensorProto

        if ("const", value) not in self.names:
            tensor = self.helper.make_tensor("", TensorProto.FLOAT, [], [value])
            node = self.helper.make_node("Constant", [], [f"c{len(self.names)}"], value=tensor)
            self.nodes.append(node)
            self.names[("const", value)] = node.output[0]
        return self.names[("const", value)]

    def attr(self, key: str) -> str:
        """The calling node's float attribute ``key``, as a scalar."""
        from onnx import AttributeProto

        if ("attr", key) not in self.names:
            node = self.helper.make_node("Constant", [], [f"a_{key}"])
            ref = self.helper.make_attribute_ref("value_float", AttributeProto.FLOAT)
            ref.ref_attr_name = key
            node.attribute.append(ref)
            self.nodes.append(node)
            self.names[("attr", key)] = node.output[0]
        return self.names[("attr", key)]

    def result(self, name: str) -> None:
        """Rename the result to the function's output "y"."""
        for node in self.nodes:
            node.input[:] = ["y" if i == name else i for i in node.input]
            node.output[:] = ["y" if o == name else o for o in node.output]


# --- visitors: float views in, the float result's name out -----------------------------------

def _activate(e: _Emitter, y: str, activation: str) -> str:
    if activation == "relu":
        return e.add("Relu", [y])
    if activation == "relu6":
        return e.add("Clip", [y, e.const(np.float32(0)), e.const(np.float32(6))])
    return y


def _visitor(op: str) -> Callable[..., str] | None:
    impl = implementation(op, "onnx")
    return impl.fn if impl else None


class _Visitors(dict):
    """Every op module's visitor by op name: ``converters.snn_onnx`` indexes this table
    directly until the spiking writer moves onto the registry."""

    def __missing__(self, op: str) -> Callable[..., str]:
        impl = implementation(op, "onnx")
        if impl is None:
            raise KeyError(op)
        return impl.fn


_VISITORS: dict[str, Callable[..., str]] = _Visitors()
