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

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_write_bytes
from edgekit.graph import Graph, Node, QuantParams
from edgekit.ops import implementation

Layout = tuple[int, ...]

# Operator versions every runtime here accepts (tflite-runtime 2.14 rejects FULLY_CONNECTED 12);
# ops not listed are written as version 1, which every op resolver registers.
_VERSIONS = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 4}
_TYPES = {"float32": "FLOAT32", "int8": "INT8", "int32": "INT32"}
_FUSED = {"none": "NONE", "relu": "RELU", "relu6": "RELU6"}
_CHANNELS_LAST_OPS = {"conv2d", "conv1d", "maxpool2d", "avgpool2d", "global_avgpool"}


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


def tflite_model(graph: Graph) -> TfliteModel:
    """The Graph as TFLite flatbuffer bytes; every unwritable node is named in one error."""
    graph.validate()
    unsupported = [f"{n.op} ({n.name or n.outputs[0]})" for n in graph.nodes
                   if _visitor(n.op) is None]
    if unsupported:
        raise EdgekitError(f"cannot write to TFLite, no TFLite mapping for: "
                           f"{', '.join(unsupported)}")
    writer = _Writer(graph)
    for node in graph.nodes:
        writer.node_name = node.name or node.outputs[0]
        try:
            _visitor(node.op)(writer, node)
        except EdgekitError as err:
            raise EdgekitError(f"cannot write node {writer.node_name!r} ({node.op}) to TFLite: "
                               f"{err}") from None
    return writer.finish()


def _visitor(op: str) -> Callable[[_Writer, Node], None] | None:
    impl = implementation(op, "tflite")
    return impl.fn if impl else _VISITORS.get(op)


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
        wants_nhwc = rank in (3, 4) and any(n.op in _CHANNELS_LAST_OPS for n in users)
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

    def pad(self, x: int, padding: list[int], fill: float | None = None) -> int:
        """An explicit PAD of NHWC ``x`` by [top, left, bottom, right] (zeros, i.e. the zero
        point for int8) or PADV2 with ``fill``."""
        t, left, b, r = padding
        n, h, wd, c = self.shape(x)
        out = self.derived(x, [n, h + t + b, wd + left + r, c], "/pad")
        pads = self.int32([[0, 0], [t, b], [left, r], [0, 0]])
        if fill is None:
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

    def finish(self) -> TfliteModel:
        import flatbuffers

        sub = self.s.SubGraphT()
        sub.tensors, sub.operators, sub.name = self.tensors, self.operators, "main"
        sub.inputs = [self.views[(n, self.layout[n])] for n in self.graph.inputs]
        sub.outputs = [self.views[(n, self.layout[n])] for n in self.graph.outputs]
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


# --- visitors: one per Graph op ---------------------------------------------------------------

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


def _conv(w: _Writer, node: Node, x: int, weight: np.ndarray, stride: list[int],
          padding: list[int], dilation: list[int], out: int) -> None:
    """CONV_2D or DEPTHWISE_CONV_2D on NHWC tensors from an OIHW weight."""
    groups, cin, cout = node.attrs["groups"], w.shape(x)[3], weight.shape[0]
    if groups == 1:
        code, opts = "CONV_2D", w.options("Conv2D")
        filt = w.weight(node, weight.transpose(0, 2, 3, 1), 0)
    elif groups == cin:
        code, opts = "DEPTHWISE_CONV_2D", w.options("DepthwiseConv2D",
                                                     depthMultiplier=cout // cin)
        filt = w.weight(node, weight.transpose(1, 2, 3, 0), 3)
    else:
        raise EdgekitError(f"grouped convolution (groups={groups} of {cin} channels) has no "
                           "TFLite kernel; split it into groups=1 convolutions and a concat")
    window = [dilation[i] * (weight.shape[2 + i] - 1) + 1 for i in range(2)]
    x, mode = w.window_mode(x, out, window, stride, padding)
    opts.padding = getattr(w.s.Padding, mode)
    opts.strideH, opts.strideW = stride
    opts.dilationHFactor, opts.dilationWFactor = dilation
    opts.fusedActivationFunction = w.fused(node.attrs["activation"])
    w.op(code, [x, filt, w.bias(node, cout)], [out], opts)


def _conv2d(w: _Writer, node: Node) -> None:
    a = node.attrs
    x = w.value(node.inputs[0], channels_last(4))
    out = w.output(node, channels_last(4))
    _conv(w, node, x, w.graph.params[node.inputs[1]], a["stride"], a["padding"], a["dilation"],
          out)


def _conv1d(w: _Writer, node: Node) -> None:
    """A CONV_2D of height 1 between RESHAPEs of the NLC tensors to N1LC."""
    a = node.attrs
    x = w.value(node.inputs[0], channels_last(3))
    x4 = w.derived(x, [w.shape(x)[0], 1, *w.shape(x)[1:]], "/n1lc")
    w.reshape(x, x4)
    out = w.output(node, channels_last(3))
    out4 = w.derived(out, [w.shape(out)[0], 1, *w.shape(out)[1:]], "/n1lc")
    weight = w.graph.params[node.inputs[1]][:, :, None, :]
    _conv(w, node, x4, weight, [1, *a["stride"]], [0, a["padding"][0], 0, a["padding"][1]],
          [1, *a["dilation"]], out4)
    w.reshape(out4, out)


def _linear(w: _Writer, node: Node) -> None:
    """FULLY_CONNECTED over the last axis; inputs of rank > 2 reshape back afterwards."""
    rank = len(w.graph.tensors[node.inputs[0]].shape)
    x = w.value(node.inputs[0], identity(rank))
    out = w.output(node, identity(rank))
    shape = w.shape(out)
    flat = out if rank == 2 else w.derived(out, [math.prod(shape[:-1]), shape[-1]], "/2d")
    weight = w.graph.params[node.inputs[1]]
    opts = w.options("FullyConnected", fusedActivationFunction=w.fused(node.attrs["activation"]))
    w.op("FULLY_CONNECTED", [x, w.weight(node, weight, 0), w.bias(node, weight.shape[0])],
         [flat], opts)
    if flat != out:
        w.reshape(flat, out)


def _binary(code: str) -> Callable[[_Writer, Node], None]:
    """ADD or MUL in the layout of its (first) activation operand; TFLite broadcasts."""
    def visit(w: _Writer, node: Node) -> None:
        layout = w.layout[next(n for n in node.inputs if n not in w.graph.params)]
        ins = [w.value(name, layout) for name in node.inputs]
        activation = node.attrs.get("activation", "none")
        opts = w.options("Add" if code == "ADD" else "Mul",
                         fusedActivationFunction=w.fused(activation))
        w.op(code, ins, [w.output(node, layout)], opts)
    return visit


def _pool(w: _Writer, node: Node, code: str, kernel: list[int], stride: list[int],
          padding: list[int], fill: float | None = None) -> None:
    x = w.value(node.inputs[0], channels_last(4))
    out = w.output(node, channels_last(4))
    x, mode = w.window_mode(x, out, kernel, stride, padding, fill)
    opts = w.options("Pool2D", padding=getattr(w.s.Padding, mode), strideH=stride[0],
                     strideW=stride[1], filterHeight=kernel[0], filterWidth=kernel[1])
    w.op(code, [x], [out], opts)


def _maxpool2d(w: _Writer, node: Node) -> None:
    """MAX_POOL_2D; padding SAME cannot express goes through PADV2 with the lowest value."""
    a = node.attrs
    if a["dilation"] != [1, 1]:
        raise EdgekitError(f"TFLite's MAX_POOL_2D has no dilation (got {a['dilation']})")
    lowest = -128 if w.int8 else float(np.finfo(np.float32).min)
    _pool(w, node, "MAX_POOL_2D", a["kernel"], a["stride"], a["padding"], lowest)


def _avgpool2d(w: _Writer, node: Node) -> None:
    """AVERAGE_POOL_2D: TFLite divides by the taps inside the input, so padding is writable
    only as SAME with count_include_pad=False."""
    a = node.attrs
    if any(a["padding"]):
        shape = w.graph.tensors[node.inputs[0]].shape[2:]
        out = w.graph.tensors[node.outputs[0]].shape[2:]
        if a["count_include_pad"]:
            raise EdgekitError("avgpool2d with padding and count_include_pad=True cannot be "
                               "written: TFLite never counts padded taps")
        if padding_mode(list(shape), list(out), a["kernel"], a["stride"], a["padding"]) is None:
            raise EdgekitError(f"avgpool2d padding {a['padding']} is not TFLite's SAME padding")
    _pool(w, node, "AVERAGE_POOL_2D", a["kernel"], a["stride"], a["padding"])


def _global_avgpool(w: _Writer, node: Node) -> None:
    h, wd = w.graph.tensors[node.inputs[0]].shape[2:]
    _pool(w, node, "AVERAGE_POOL_2D", [h, wd], [1, 1], [0, 0, 0, 0])


def _reshape(w: _Writer, node: Node) -> None:
    """RESHAPE on the Graph's (channels-first) order, so flatten after a conv stays NCHW."""
    rank = len(w.graph.tensors[node.inputs[0]].shape)
    x = w.value(node.inputs[0], identity(rank))
    w.reshape(x, w.output(node, identity(len(node.attrs["shape"]) + 1)))


def _concat(w: _Writer, node: Node) -> None:
    layout = w.layout[node.inputs[0]]
    axis = layout.index(node.attrs["axis"] % len(layout))
    ins = [w.value(name, layout) for name in node.inputs]
    w.op("CONCATENATION", ins, [w.output(node, layout)], w.options("Concatenation", axis=axis))


def _softmax(w: _Writer, node: Node) -> None:
    """SOFTMAX works on the last TFLite axis: use a layout that puts the Graph's axis there."""
    layout = w.layout[node.inputs[0]]
    axis = node.attrs["axis"] % len(layout)
    if layout[-1] != axis:
        layout = (*(d for d in range(len(layout)) if d != axis), axis)
    x = w.value(node.inputs[0], layout)
    w.op("SOFTMAX", [x], [w.output(node, layout)], w.options("Softmax", beta=1.0))


def _layernorm(w: _Writer, node: Node) -> None:
    """float32 only, as MEAN/SQUARED_DIFFERENCE/RSQRT arithmetic: TFLite has no layer-norm
    builtin, and an int8 version would need quantization ranges the Graph does not carry."""
    if w.int8:
        raise EdgekitError("layernorm has no int8 TFLite form; keep it in a float32 Graph")
    rank = len(w.graph.tensors[node.inputs[0]].shape)
    k, layout = node.attrs["normalized_ndim"], identity(rank)
    x = w.value(node.inputs[0], layout)
    axes = w.int32(list(range(rank - k, rank)))
    reduced = [1 if i >= rank - k else d for i, d in enumerate(w.shape(x))]

    def step(code: str, ins: list[int], shape: list[int], suffix: str, opts: Any = None) -> int:
        out = w.derived(x, shape, f"/{suffix}")
        w.op(code, ins, [out], opts)
        return out

    mean = step("MEAN", [x, axes], reduced, "mean", w.options("Reducer", keepDims=True))
    sq = step("SQUARED_DIFFERENCE", [x, mean], w.shape(x), "sq")
    var = step("MEAN", [sq, axes], reduced, "var", w.options("Reducer", keepDims=True))
    eps = w.constant(f"{node.outputs[0]}/eps", np.array([node.attrs["eps"]], np.float32))
    inv = step("RSQRT", [step("ADD", [var, eps], reduced, "var_eps")], reduced, "rstd")
    centred = step("SUB", [x, mean], w.shape(x), "centred")
    normed = step("MUL", [centred, inv], w.shape(x), "normed")
    scaled = step("MUL", [normed, w.value(node.inputs[1], layout)], w.shape(x), "scaled")
    w.op("ADD", [scaled, w.value(node.inputs[2], layout)], [w.output(node, layout)])


_VISITORS: dict[str, Callable[[_Writer, Node], None]] = {
    "conv2d": _conv2d,
    "conv1d": _conv1d,
    "linear": _linear,
    "add": _binary("ADD"),
    "mul": _binary("MUL"),
    "maxpool2d": _maxpool2d,
    "avgpool2d": _avgpool2d,
    "global_avgpool": _global_avgpool,
    "reshape": _reshape,
    "concat": _concat,
    "softmax": _softmax,
    "layernorm": _layernorm,
}
