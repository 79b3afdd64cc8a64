"""Graph -> ``.tflite`` via flatbuffers and the TFLite schema's object API (no TensorFlow).

Layout. TFLite kernels are channels-last; the Graph is channels-first. Every Graph activation is
written in one *native layout*, a permutation of its Graph axes (``tfl = graph.transpose(p)``):
convolutions and pools produce channels-last tensors (NHWC, NLC), elementwise ops keep their
input's layout, everything else uses the Graph's own order. An op that needs a tensor in another
layout gets a view made on first use and cached: a TRANSPOSE, or a free RESHAPE when only unit
axes move. So a flatten after a conv reads NCHW order (TRANSPOSE, then RESHAPE) and the written
model computes exactly the Graph. ``TfliteModel.tensors`` records every activation's TFLite
tensor and layout; Sessions transpose inputs and outputs on the host with it.

Batch. Tensors are written with batch 1 and a shape signature of -1, and every RESHAPE says -1
for the batch, so LiteRT can resize the inputs; tflite-micro runs one sample at a time.

int8 Graphs (``docs/quantized-graph.md``) map one to one onto TFLite's int8 kernels: weights
per channel (``quantized_dimension`` 0 for CONV_2D's OHWI and FULLY_CONNECTED, 3 for
DEPTHWISE_CONV_2D's 1HWC), int32 biases, per-tensor activations. Inserted PAD ops pad with the
input's zero point (TFLite's PAD does so for int8), max-pool padding with the lowest value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_write_bytes
from edgekit.graph import Graph, Node, QuantParams
from edgekit.ops import implementation
from edgekit.quant.lowbit import dequantized

from . import lowbit_writers

Layout = tuple[int, ...]

# Operator versions every runtime here accepts (tflite-runtime 2.14 rejects FULLY_CONNECTED 12);
# ops not listed are written as version 1, which every op resolver registers.
_VERSIONS = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 4}
_TYPES = {"float32": "FLOAT32", "int8": "INT8", "int32": "INT32", "bool": "BOOL"}
_FUSED = {"none": "NONE", "relu": "RELU", "relu6": "RELU6"}


@dataclass
class TfliteModel:
    """A written model and what a Session or a per-layer report needs to read it."""

    data: bytes
    op_nodes: list[str]  # TFLite operator index -> Graph node name (its output's if unnamed)
    tensors: dict[str, tuple[int, Layout]]  # Graph activation -> (TFLite tensor, layout)
    inputs: list[str]  # the Graph's inputs, in the model's input order

    def layout(self, name: str) -> Layout:
        return self.tensors[name][1]


def schema() -> ModuleType:
    """The TFLite flatbuffer schema module from ai-edge-litert, or tflite-micro's copy."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        try:
            from tflite_micro.tensorflow.lite.micro.python import schema_py_generated
        except ImportError:
            raise EdgekitError("writing .tflite files needs the TFLite schema: "
                               "pip install 'edgekit[tflite]'") from None
    return schema_py_generated


def to_tflite(graph: Graph, path: str | Path) -> Path:
    """Write ``graph`` as a ``.tflite`` file; see ``tflite_model`` for the op map and layouts."""
    path = Path(path)
    atomic_write_bytes(path, tflite_model(graph).data)
    return path


def tflite_model(graph: Graph, extra_outputs: Sequence[str] = ()) -> TfliteModel:
    """The Graph as TFLite flatbuffer bytes; every unwritable node is named in one error.
    ``extra_outputs`` names intermediate Graph tensors to expose as model outputs too, so a
    per-layer check reads them from the same kernels (XNNPACK's too) as the whole model."""
    graph.validate()
    unsupported = [f"{n.op} ({n.name or n.outputs[0]})" for n in graph.nodes
                   if _visitor(n.op) is None]
    if unsupported:
        raise EdgekitError(f"cannot write to TFLite, no TFLite mapping for: "
                           f"{', '.join(unsupported)}")
    packed = graph
    if lowbit_writers.require(graph, "tflite"):  # written from their values, then packed
        graph = dequantized(graph)
    writer = _Writer(graph)
    for node in graph.nodes:
        writer.node_name = node.name or node.outputs[0]
        try:
            _visitor(node.op)(writer, node)
        except EdgekitError as err:
            raise EdgekitError(f"cannot write node {writer.node_name!r} ({node.op}) to TFLite: "
                               f"{err}") from None
    lowbit_writers.tflite_float16(writer, packed)
    return writer.finish([n for n in extra_outputs if n not in graph.outputs])


def _visitor(op: str) -> Callable[[_Writer, Node], None] | None:
    impl = implementation(op, "tflite")
    return impl.fn if impl else None


def _channels_last_op(op: str) -> bool:
    """Whether ``op``'s TFLite form reads its input channels-last (its visitor registered with
    ``channels_last=True``), so a Graph input it reads is declared NHWC/NLC."""
    impl = implementation(op, "tflite")
    return bool(impl and impl.options.get("channels_last"))


def channels_last(rank: int) -> Layout:
    return (0, *range(2, rank), 1)


def identity(rank: int) -> Layout:
    return tuple(range(rank))


def _same_memory_order(shape: tuple[int, ...], a: Layout, b: Layout) -> bool:
    """True when two layouts of ``shape`` differ only by where unit axes sit (a RESHAPE)."""
    return [d for d in a if shape[d] != 1] == [d for d in b if shape[d] != 1]


class _Writer:
    """Accumulates tensors, buffers and operators; visitors call its small helpers."""

    def __init__(self, graph: Graph):
        self.s = schema()
        self.graph = graph
        self.int8 = graph.metadata.get("quantized") == "int8"
        self.buffers: list[Any] = [self.s.BufferT()]  # buffer 0: "no data", by convention
        self.tensors: list[Any] = []
        self.operators: list[Any] = []
        self.opcodes: dict[str, int] = {}
        self.op_nodes: list[str] = []
        self.views: dict[tuple[str, Layout], int] = {}
        self.layout: dict[str, Layout] = {}
        self.int32_consts: dict[tuple[tuple[int, ...], bytes], int] = {}
        self.node_name = ""
        for name in graph.inputs:
            self._add_input(name)

    # --- tensors -------------------------------------------------------------------------
    def tensor(self, name: str, shape: list[int], dtype: str, quant: Any = None,
               data: np.ndarray | None = None) -> int:
        t = self.s.TensorT()
        t.name, t.shape = name, [int(d) for d in shape]
        t.type = getattr(self.s.TensorType, _TYPES[dtype])
        t.quantization = quant
        if data is None:
            t.shapeSignature = [-1, *t.shape[1:]]
        else:
            buf = self.s.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def quant(self, q: QuantParams | None, axis: int | None = None) -> Any:
        """TFLite quantization parameters; ``axis`` is the per-channel axis in TFLite layout."""
        if q is None:
            return None
        p = self.s.QuantizationParametersT()
        p.scale = [float(s) for s in q.scale]
        p.zeroPoint = [int(z) for z in q.zero_point]
        p.quantizedDimension = 0 if axis is None else axis
        return p

    def constant(self, name: str, data: np.ndarray, quant: Any = None) -> int:
        return self.tensor(name, list(data.shape), str(data.dtype), quant, data)

    def int32(self, values: Any) -> int:
        """A shared int32 constant (shapes, permutations, paddings, axes)."""
        arr = np.asarray(values, np.int32)
        key = (arr.shape, arr.tobytes())
        if key not in self.int32_consts:
            self.int32_consts[key] = self.constant(f"const{len(self.int32_consts)}", arr)
        return self.int32_consts[key]

    def derived(self, src: int, shape: list[int], suffix: str) -> int:
        """A new activation with ``src``'s dtype and quantization (reshapes, pads, temps)."""
        t = self.tensors[src]
        return self.tensor(f"{t.name}{suffix}", shape, self.dtype(src), t.quantization)

    def shape(self, index: int) -> list[int]:
        return self.tensors[index].shape

    def dtype(self, index: int) -> str:
        code = self.tensors[index].type
        return next(k for k, v in _TYPES.items() if getattr(self.s.TensorType, v) == code)

    # --- Graph tensors in layouts --------------------------------------------------------
    def _activation(self, name: str, layout: Layout, tfl_name: str) -> int:
        info = self.graph.tensors[name]
        return self.tensor(tfl_name, [info.shape[a] for a in layout], info.dtype,
                           self.quant(info.quant))

    def _add_input(self, name: str) -> None:
        rank = len(self.graph.tensors[name].shape)
        users = self.graph.consumers().get(name, [])
        wants_nhwc = rank in (3, 4) and any(_channels_last_op(n.op) for n in users)
        self._declare(name, channels_last(rank) if wants_nhwc else identity(rank))

    def output(self, node: Node, layout: Layout) -> int:
        """Declare the node's output tensor in ``layout`` (its native layout from now on)."""
        return self._declare(node.outputs[0], layout)

    def _declare(self, name: str, layout: Layout) -> int:
        self.layout[name] = layout
        self.views[(name, layout)] = self._activation(name, layout, name)
        return self.views[(name, layout)]

    def value(self, name: str, layout: Layout) -> int:
        """The TFLite tensor holding Graph tensor ``name`` in ``layout`` (made on first use).

        A param of lower rank (a broadcast operand) gets leading unit axes first.
        """
        key = (name, layout)
        if key not in self.views:
            self.views[key] = (self._param(name, layout) if name in self.graph.params
                               else self._relayout(name, layout))
        return self.views[key]

    def _param(self, name: str, layout: Layout) -> int:
        value, info = self.graph.params[name], self.graph.tensors[name]
        lead = len(layout) - value.ndim
        data = value.reshape((1,) * lead + value.shape).transpose(layout)
        axis = None
        if info.quant is not None and info.quant.axis is not None:
            axis = layout.index(info.quant.axis + lead)
        return self.constant(name, data, self.quant(info.quant, axis))

    def _relayout(self, name: str, layout: Layout) -> int:
        native = self.layout[name]
        if len(layout) != len(native):
            raise EdgekitError(f"tensor {name!r} of rank {len(native)} used as rank {len(layout)}")
        src = self.views[(name, native)]
        shape = self.graph.tensors[name].shape
        out = self._activation(name, layout, f"{name}/{''.join(map(str, layout))}")
        if _same_memory_order(shape, native, layout):
            self.reshape(src, out)
        else:
            self.op("TRANSPOSE", [src, self.int32([native.index(a) for a in layout])], [out])
        return out

    # --- operators -----------------------------------------------------------------------
    def op(self, code: str, inputs: list[int], outputs: list[int], options: Any = None) -> None:
        o = self.s.OperatorT()
        o.opcodeIndex = self.opcodes.setdefault(code, len(self.opcodes))
        o.inputs, o.outputs = inputs, outputs
        if options is not None:
            o.builtinOptionsType = getattr(self.s.BuiltinOptions, type(options).__name__[:-1])
            o.builtinOptions = options
        self.operators.append(o)
        self.op_nodes.append(self.node_name)

    def options(self, kind: str, **fields: Any) -> Any:
        opts = getattr(self.s, f"{kind}OptionsT")()
        for key, value in fields.items():
            setattr(opts, key, value)
        return opts

    def fused(self, activation: str) -> int:
        return getattr(self.s.ActivationFunctionType, _FUSED[activation])

    def unary(self, node: Node, code: str, options: Any = None) -> None:
        """An elementwise op ``code`` in its input's layout."""
        layout = self.layout[node.inputs[0]]
        self.op(code, [self.value(node.inputs[0], layout)], [self.output(node, layout)], options)

    def composed(self, node: Node, build: Callable[[Composer, int], None]) -> None:
        """A float elementwise op made of several builtins in its input's layout: ``build(c, x)``
        makes them with ``c.op`` and ends with ``c.result``, which writes the node's output."""
        layout = self.layout[node.inputs[0]]
        build(Composer(self, node, layout), self.value(node.inputs[0], layout))

    def lut(self, node: Node, table: np.ndarray) -> None:
        """int8 ``y = table[x + 128]`` in the input's layout (``numerics.params.lut_params``): a
        GATHER from the 256-entry table at the input CAST to int32 plus 128. CAST, int32 ADD and
        GATHER are kernels tflite-micro and LiteRT both register, and a lookup is exact, so both
        agree with edgekit's runtime bit for bit."""
        layout = self.layout[node.inputs[0]]
        x = self.value(node.inputs[0], layout)
        name, types = self.tensors[x].name, self.s.TensorType
        wide = self.tensor(f"{name}/int32", self.shape(x), "int32")
        self.op("CAST", [x], [wide], self.options("Cast", inDataType=types.INT8,
                                                  outDataType=types.INT32))
        index = self.tensor(f"{name}/index", self.shape(x), "int32")
        self.op("ADD", [wide, self.int32([128])], [index], self.options("Add"))
        values = self.constant(f"{node.outputs[0]}/table", np.asarray(table, np.int8),
                               self.quant(self.graph.tensors[node.outputs[0]].quant))
        self.op("GATHER", [values, index], [self.output(node, layout)],
                self.options("Gather", axis=0))

    def pad(self, x: int, padding: list[int], fill: float | None = None) -> int:
        """An explicit PAD of NHWC ``x`` by [top, left, bottom, right] (zeros, i.e. the zero
        point for int8) or PADV2 with ``fill``."""
        t, left, b, r = padding
        return self.pad_axes(x, [[0, 0], [t, b], [left, r], [0, 0]], fill)

    def pad_axes(self, x: int, pairs: list[list[int]], fill: float | None = None,
                 mirror: str = "", out: int | None = None) -> int:
        """``x`` padded by (before, after) ``pairs`` per axis of its TFLite layout: PAD (zeros,
        i.e. the zero point for int8), PADV2 with ``fill`` (a value of ``x``'s dtype), or
        MIRROR_PAD in ``mirror`` mode ("REFLECT", "SYMMETRIC"); into ``out`` or a new tensor."""
        if out is None:
            shape = [d + b + a for d, (b, a) in zip(self.shape(x), pairs, strict=True)]
            out = self.derived(x, shape, "/pad")
        pads = self.int32(pairs)
        if mirror:
            self.op("MIRROR_PAD", [x, pads], [out],
                    self.options("MirrorPad", mode=getattr(self.s.MirrorPadMode, mirror)))
        elif fill is None:
            self.op("PAD", [x, pads], [out])
        else:
            value = self.constant(f"{self.tensors[x].name}/fill", np.array([fill], self.dtype(x)),
                                  self.tensors[x].quantization)
            self.op("PADV2", [x, pads, value], [out])
        return out

    def window_mode(self, x: int, out: int, window: list[int], stride: list[int],
                    padding: list[int], fill: float | None = None) -> tuple[int, str]:
        """(input, "SAME"/"VALID") for a windowed op on NHWC ``x``, padding explicitly when
        TFLite's own padding cannot give the Graph's."""
        mode = padding_mode(self.shape(x)[1:3], self.shape(out)[1:3], window, stride, padding)
        if mode is None:
            return self.pad(x, padding, fill), "VALID"
        return x, mode

    def weight(self, node: Node, data: np.ndarray, axis: int) -> int:
        """The node's weight (input 1) as ``data`` (in TFLite's layout), its per-channel
        quantization moved to TFLite's ``axis``."""
        info = self.graph.tensors[node.inputs[1]]
        return self.constant(node.inputs[1], np.ascontiguousarray(data),
                             self.quant(info.quant, axis))

    def bias(self, node: Node, channels: int) -> int:
        """The node's bias (input 2), or zeros for a float Graph; int8 kernels need one."""
        if len(node.inputs) > 2:
            return self.value(node.inputs[2], (0,))
        if self.int8:
            raise EdgekitError("int8 conv/linear needs an int32 bias (docs/quantized-graph.md)")
        return self.constant(f"{node.outputs[0]}/bias", np.zeros(channels, np.float32))

    def reshape(self, src: int, dst: int) -> None:
        self.op("RESHAPE", [src, self.int32([-1, *self.shape(dst)[1:]])], [dst])

    def finish(self, extra_outputs: Sequence[str] = ()) -> TfliteModel:
        import flatbuffers

        sub = self.s.SubGraphT()
        sub.tensors, sub.operators, sub.name = self.tensors, self.operators, "main"
        sub.inputs = [self.views[(n, self.layout[n])] for n in self.graph.inputs]
        sub.outputs = [self.views[(n, self.layout[n])]
                       for n in [*self.graph.outputs, *extra_outputs]]
        model = self.s.ModelT()
        model.version, model.description = 3, "edgekit"
        model.subgraphs, model.buffers = [sub], self.buffers
        codes = sorted(self.opcodes, key=self.opcodes.get)
        model.operatorCodes = [self._opcode(c) for c in codes]
        builder = flatbuffers.Builder(1 << 16)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        tensors = {name: (self.views[(name, layout)], layout)
                   for name, layout in self.layout.items()}
        return TfliteModel(bytes(builder.Output()), self.op_nodes, tensors,
                           list(self.graph.inputs))

    def _opcode(self, code: str) -> Any:
        builtin = getattr(self.s.BuiltinOperator, code)
        oc = self.s.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode = builtin, min(builtin, 127)
        oc.version = _VERSIONS.get(code, 1)
        return oc


class Composer:
    """What a composition's builder (``_Writer.composed``) makes its builtins with: each op's
    result is a new float32 tensor (``dtype`` for comparisons: "bool") shaped like the input;
    inputs are tensors or Python floats, which become scalar constants."""

    def __init__(self, w: _Writer, node: Node, layout: Layout):
        self.w, self.node, self.layout = w, node, layout
        self.shape = w.shape(w.value(node.inputs[0], layout))
        self.consts: dict[float, int] = {}

    def options(self, kind: str, **fields: Any) -> Any:
        return self.w.options(kind, **fields)

    def op(self, code: str, *inputs: int | float, options: Any = None,
           dtype: str = "float32") -> int:
        out = self.w.tensor(f"{self.node.outputs[0]}/{code.lower()}{len(self.w.tensors)}",
                            self.shape, dtype)
        self.w.op(code, self._tensors(inputs), [out], options)
        return out

    def result(self, code: str, *inputs: int | float, options: Any = None) -> None:
        """The last op: it writes the node's output."""
        self.w.op(code, self._tensors(inputs), [self.w.output(self.node, self.layout)], options)

    def _tensors(self, inputs: tuple[int | float, ...]) -> list[int]:
        return [self._const(v) if isinstance(v, float) else v for v in inputs]

    def _const(self, value: float) -> int:
        if value not in self.consts:
            self.consts[value] = self.w.constant(f"{self.node.outputs[0]}/c{len(self.consts)}",
                                                 np.array([value], np.float32))
        return self.consts[value]


# --- for the op modules' visitors (edgekit.ops, backend "tflite") ----------------------------

def padding_mode(in_hw: list[int], out_hw: list[int], window: list[int], stride: list[int],
                  padding: list[int]) -> str | None:
    """"VALID" or "SAME" when TFLite's own padding gives the Graph's, else None.

    TFLite's SAME makes ceil(in / stride) outputs and pads ``total // 2`` before; padding the
    Graph declares beyond what its last window reads is never seen, so only those two matter.
    """
    if not any(padding):
        return "VALID"
    for i, before in enumerate(padding[:2]):
        total = max((out_hw[i] - 1) * stride[i] + window[i] - in_hw[i], 0)
        if out_hw[i] != -(-in_hw[i] // stride[i]) or before != total // 2:
            return None
    return "SAME"
