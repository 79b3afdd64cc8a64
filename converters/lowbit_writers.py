"""Low-bit weights (``numerics.formats``, made by ``quant.lowbit``) in the files the writers
make, where the file format has the type and its runtime runs it; anything else is refused by
``require``, naming the scheme and the writer.

- ONNX: int4 (INT4, opset 21) and FP8 (FLOAT8E4M3FN / FLOAT8E5M2, opset 19; 21 with groups)
  as initializers of the format behind DequantizeLinear (per output channel, or blocked per
  group), REx orders summed; float16 as a FLOAT16 initializer behind a Cast. The writer makes
  the float model at its opset 17 from the values the weights stand for, the version converter
  lifts it to opset 21 when the format needs it, and ``onnx_weights`` puts the packed
  initializers in place of the float ones. Ternary has no ONNX type.
- TFLite: float16 weights (FLOAT16 buffers, DEQUANTIZE to float32: TFLite's float16
  quantization, which LiteRT runs). LiteRT's int4 and FP8 are not written.
- C firmware: int4 and ternary weights of int8 Graphs (the ``*_a8`` schemes), packed as
  stored (``to_c_lowbit``); float-activation low-bit Graphs are refused. The other writers
  refuse packed weights in int8 Graphs (their int8 layers take int8 weights).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.numerics import formats

WRITERS = {"onnx": ("int4", "fp8_e4m3", "fp8_e5m2", "float16"), "tflite": ("float16",),
           "c": ()}
ONNX_OPSET = 21  # INT4 in DequantizeLinear, and its block_size for groups
ONNX_IR = 10  # the IR version that goes with opset 21


def low_bit_weights(graph: Graph) -> dict[str, tuple[str, int]]:
    """``{weight name: (format, orders)}`` of the Graph's packed weights."""
    return {name: formats.weight_dtype(t.dtype) for name, t in graph.tensors.items()
            if formats.weight_dtype(t.dtype)}


INT8_WRITERS = {"c": ("int4", "ternary")}  # packed weights of int8 Graphs (*_a8 schemes)


def require(graph: Graph, writer: str) -> dict[str, tuple[str, int]]:
    """The Graph's packed weights, after checking ``writer`` can write every one of them."""
    weights = low_bit_weights(graph)
    int8 = graph.metadata.get("quantized") == "int8"
    takes = INT8_WRITERS.get(writer, ()) if int8 else WRITERS[writer]
    missing = sorted({fmt for fmt, _ in weights.values()} - set(takes))
    if missing and int8:
        scheme = graph.metadata.get("quantization", {}).get("scheme", "int8")
        raise EdgekitError(f"the {writer} writer cannot write the {scheme!r} scheme's "
                           f"{'/'.join(missing)} weights in an int8 Graph (the c writer, for "
                           "the microcontroller firmware, can); run it on the edgekit runtime "
                           "(target cpu) or quantize to int8")
    if writer == "c" and weights and not int8:
        raise EdgekitError(f"the c writer cannot write the {graph.metadata.get('quantized')!r} "
                           "scheme's float-activation weights: the firmware runs int4 and "
                           "ternary weights with int8 activations, quantize with scheme "
                           "'int4_a8' or 'ternary_a8'")
    if missing:
        scheme = graph.metadata.get("quantized", missing[0])
        takes = ", ".join(WRITERS[writer]) or "none"
        raise EdgekitError(f"the {writer} writer cannot write the {scheme!r} scheme's "
                           f"{'/'.join(missing)} weights ({writer} takes low-bit weights: "
                           f"{takes}); run it on the edgekit runtime (target cpu) or quantize "
                           "to int8")
    return weights


# --- ONNX ------------------------------------------------------------------------------------

def onnx_weights(model: Any, graph: Graph) -> Any:
    """``model`` (written from the values of ``graph``'s packed weights) with each of those
    weights as its packed initializer and the nodes that make its float value."""
    import onnx
    from onnx import helper, numpy_helper, version_converter

    weights = require(graph, "onnx")
    if any(fmt != "float16" for fmt, _ in weights.values()):
        model = version_converter.convert_version(model, ONNX_OPSET)
        model.ir_version = ONNX_IR
    g = model.graph
    floats = {t.name for t in g.initializer}
    keep = [t for t in g.initializer if t.name not in weights]
    del g.initializer[:]
    g.initializer.extend(keep)
    made = []
    for name, (fmt, _) in weights.items():
        if name in floats:
            made += _onnx_weight(helper, numpy_helper, g, graph, name, fmt)
    nodes = made + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(model, full_check=True)
    return model


_ONNX_TYPES = {"int4": "INT4", "fp8_e4m3": "FLOAT8E4M3FN", "fp8_e5m2": "FLOAT8E5M2"}


def _onnx_weight(helper, numpy_helper, g, graph: Graph, name: str, fmt: str) -> list:
    """The initializers (added to ``g``) and nodes that compute weight ``name``'s float32
    value under its name."""
    from onnx import TensorProto

    info, storage = graph.tensors[name], graph.params[name]
    row = int(np.prod(info.shape[1:]))
    if fmt == "float16":
        g.initializer.append(numpy_helper.from_array(
            np.ascontiguousarray(storage[0, :, :row]).reshape(info.shape), f"{name}/f16"))
        return [helper.make_node("Cast", [f"{name}/f16"], [name], to=TensorProto.FLOAT,
                                 name=f"{name}/cast")]
    scales = formats.scale_array(info.quant.scale, info.dtype, info.shape)
    codes = formats.unpack(storage, fmt, row)  # values (int4), or FP8 codes' values
    nodes, terms = [], []
    for k in range(storage.shape[0]):
        q = f"{name}/q{k}"
        if fmt == "int4":
            tensor = helper.make_tensor(q, TensorProto.INT4, [info.shape[0], row],
                                        codes[k].astype(np.int64).ravel().tolist())
        else:
            tensor = helper.make_tensor(q, getattr(TensorProto, _ONNX_TYPES[fmt]),
                                        [info.shape[0], row], storage[k].tobytes(), raw=True)
        groups = scales.shape[2]
        scale = numpy_helper.from_array(scales[k] if groups > 1 else scales[k, :, 0],
                                        f"{q}/scale")
        g.initializer.extend([tensor, scale])
        attrs = ({"axis": 1, "block_size": formats.group_width(row, groups)} if groups > 1
                 else {"axis": 0})
        terms.append(f"{q}/dq")
        nodes.append(helper.make_node("DequantizeLinear", [q, f"{q}/scale"], [terms[-1]],
                                      name=terms[-1], **attrs))
    flat = terms[0]
    if len(terms) > 1:
        flat = f"{name}/sum"
        nodes.append(helper.make_node("Sum", terms, [flat], name=flat))
    g.initializer.append(numpy_helper.from_array(np.array(info.shape, np.int64), f"{name}/shape"))
    nodes.append(helper.make_node("Reshape", [flat, f"{name}/shape"], [name],
                                  name=f"{name}/reshape"))
    return nodes


# --- TFLite ----------------------------------------------------------------------------------

def tflite_float16(writer: Any, graph: Graph) -> None:
    """Turn the float32 weight tensors ``writer`` wrote for ``graph``'s float16 weights into
    FLOAT16 buffers, each read through a DEQUANTIZE op (first in the model) into a float32
    tensor that the layer reads instead."""
    weights = require(graph, "tflite")
    if not weights:
        return
    types = writer.s.TensorType
    for i, t in enumerate(list(writer.tensors)):
        name = t.name.decode() if isinstance(t.name, bytes) else t.name
        if name not in weights or t.buffer == 0:
            continue
        buf = writer.buffers[t.buffer]
        values = np.frombuffer(bytes(buf.data), np.float32).astype(np.float16)
        buf.data = np.frombuffer(values.tobytes(), np.uint8)
        t.type = types.FLOAT16
        out = writer.tensor(f"{name}/dequantized", list(t.shape), "float32")
        writer.tensors[out].shapeSignature = None
        readers = [k for k, op in enumerate(writer.operators) if i in op.inputs]
        for k in readers:
            writer.operators[k].inputs = [out if j == i else j for j in writer.operators[k].inputs]
        writer.node_name = writer.op_nodes[readers[0]]  # the layer it belongs to
        writer.op("DEQUANTIZE", [i], [out])
        writer.operators.insert(0, writer.operators.pop())
        writer.op_nodes.insert(0, writer.op_nodes.pop())
