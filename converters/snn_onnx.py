"""A spiking Graph → ONNX with time unrolled: T copies of the network, the neurons' membranes
carried from each copy to the next, and the outputs averaged over the steps as the runtime does.

ONNX has no neuron state, but a fixed T unrolls exactly: step t's tensors are named
``name@t``, params and the (direct-encoded) input are shared by every step, and a neuron is
``U = leak·V + x``, ``S = Cast(U >= θ)``, ``out = S·θ``, then ``V = U − out`` (reset by
subtraction) or ``V = U·(1 − S)`` (to zero), starting from its initial membrane. Every other op
is written by ``to_onnx``'s visitors, so ONNX Runtime checks the event-driven runtime against
dense kernels written independently. Rate encoding draws random spikes inside the runtime;
its ONNX form would need the same draws as inputs, so it is not exported.

An int8 spiking Graph (``edgekit.quant.spiking``) unrolls to integers that ONNX Runtime
computes exactly as the runtime does: the model's input is the int8 tensor and its outputs the
int32 sums over the steps (the edge divides and dequantizes them, ``edge.time_average``).
Membranes, thresholds and spikes are int32/int8 tensors under Add, Sub, GreaterOrEqual and
Where; LIF's Q15 leak is an int64 Mul and Div (truncating, as the runtime's). ``linear`` is an
int32 MatMul. ONNX Runtime convolves only 8-bit integers, so a convolution (and an average
pool's window sum, a convolution by ones) runs as a float32 Conv on tensors holding small
integers, cast back to int32: exact while every partial sum stays below 2^24, which
``_check_exact`` proves from the weights and the inputs' integer ranges before writing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_write_bytes
from edgekit.graph import Graph, Node
from edgekit.ops import NEURON_OPS
from edgekit.quant.spiking import add_multiplier, leak_multiplier, spike_amplitudes

from .to_onnx import _VISITORS, BATCH, _Emitter


def snn_to_onnx(graph: Graph, path: str | Path) -> Path:
    """Write the spiking ``graph`` as an unrolled ``.onnx`` file."""
    path = Path(path)
    atomic_write_bytes(path, snn_onnx_model(graph).SerializeToString())
    return path


def snn_onnx_model(graph: Graph) -> Any:
    """The unrolled ``onnx.ModelProto`` of a spiking Graph."""
    import onnx
    from onnx import helper

    graph.validate()
    steps = graph.metadata.get("timesteps")
    if steps is None:
        raise EdgekitError("not a spiking Graph (no metadata timesteps); use to_onnx")
    if graph.metadata.get("encoding", "direct") != "direct":
        raise EdgekitError("only direct-encoded SNNs unroll to ONNX: rate encoding draws its "
                           "input spikes at run time")
    integer = graph.metadata.get("quantized") == "int8"
    if integer:
        _check_exact(graph)
    unrolled = Graph(graph.inputs, graph.outputs, dict(graph.tensors), [], graph.params,
                     graph.metadata)
    e = _Emitter(unrolled)
    membranes: dict[str, str] = {}
    for t in range(steps):
        def at(name: str, t: int = t) -> str:
            return name if name in graph.params or name in graph.inputs else f"{name}@{t}"

        for node in graph.nodes:
            for name in (*node.inputs, *node.outputs):
                unrolled.tensors.setdefault(at(name), graph.tensors[name])
            step = Node(node.op, [at(n) for n in node.inputs], [at(node.outputs[0])],
                        node.attrs, node.name)
            if node.op in NEURON_OPS and not integer:
                _neuron(e, step, [e.float_in(n) for n in step.inputs], membranes)
                continue
            if integer:  # each visitor ends with the node that computes the step's output
                _INT_VISITORS[node.op](e, step, node, membranes)
            else:
                _VISITORS[node.op](e, step, [e.float_in(n) for n in step.inputs])
            e._rename(step.outputs[0])
    outputs = []
    for out in graph.outputs:
        if integer:  # int32 sums; the edge divides by T and dequantizes
            total = _cast(e, f"{out}@0", "INT32")
            for t in range(1, steps):
                total = e.add("Add", [total, _cast(e, f"{out}@{t}", "INT32")])
            e.add("Identity", [total], out)
            outputs.append(helper.make_tensor_value_info(out, onnx.TensorProto.INT32,
                                                         [BATCH, *graph.tensors[out].shape[1:]]))
        else:
            total = e.add("Sum", [f"{out}@{t}" for t in range(steps)])
            e.add("Div", [total, e.const(np.float32(steps))], out)
            outputs.append(e.value_info(out))
    return e.model(graph.metadata.get("name", "edgekit-snn"), outputs)


def _neuron(e: _Emitter, node: Node, ins: list[str], membranes: dict[str, str]) -> None:
    """One step of one neuron layer; ``membranes`` maps the layer to its membrane so far."""
    from onnx import TensorProto

    x, threshold = ins[0], ins[1]
    key = node.inputs[1]  # the threshold param names the layer across steps
    v = membranes.get(key) or (ins[2] if len(ins) > 2 else e.const(
        np.zeros(e.graph.tensors[node.inputs[1]].shape, np.float32)))
    if node.op == "lif_neuron":
        v = e.add("Mul", [v, e.const(np.float32(node.attrs["leak"]))])
    u = e.add("Add", [v, x])
    spikes = e.add("Cast", [e.add("GreaterOrEqual", [u, threshold])], to=TensorProto.FLOAT)
    out = e.add("Mul", [spikes, threshold], node.outputs[0])
    if node.attrs["reset"] == "subtract":
        membranes[key] = e.add("Sub", [u, out])
    else:
        membranes[key] = e.add("Mul", [u, e.add("Sub", [e.const(np.float32(1)), spikes])])


# --- int8 spiking Graphs: integers throughout ------------------------------------------------

EXACT_LIMIT = 1 << 24  # float32 holds every integer up to here


def _cast(e: _Emitter, x: str, to: str) -> str:
    from onnx import TensorProto

    return e.add("Cast", [x], to=getattr(TensorProto, to))


def _const(e: _Emitter, key: str, make) -> str:
    """An initializer made once per key (params are shared by every step)."""
    if key not in e.floats:
        e.floats[key] = e.const(make())
    return e.floats[key]


def _centred_float(e: _Emitter, graph_node: Node, x: str) -> str:
    """An int8/int32 input as float32, less its zero point (the graph input's)."""
    zp = e.graph.tensors[graph_node.inputs[0]].quant.zero_point[0]
    y = _cast(e, x, "FLOAT")
    return e.add("Sub", [y, e.const(np.float32(zp))]) if zp else y


def _int_conv(e: _Emitter, step: Node, node: Node, membranes) -> None:
    """Float Conv on integers (exact, ``_check_exact``), then int32 plus the int32 bias."""
    a, params = node.attrs, e.graph.params
    w = _const(e, f"{node.inputs[1]}/f", lambda: params[node.inputs[1]].astype(np.float32))
    b = _const(e, f"{node.inputs[2]}/c11", lambda: params[node.inputs[2]].reshape(-1, 1, 1))
    y = e.add("Conv", [_centred_float(e, node, step.inputs[0]), w], strides=a["stride"],
              pads=a["padding"], dilations=a["dilation"], group=a["groups"])
    e.add("Add", [_cast(e, y, "INT32"), b])


def _int_linear(e: _Emitter, step: Node, node: Node, membranes) -> None:
    """int32 MatMul (exact in ONNX Runtime) on the input less its zero point."""
    params = e.graph.params
    w_t = _const(e, f"{node.inputs[1]}/t", lambda: params[node.inputs[1]].T.astype(np.int32))
    b = _const(e, node.inputs[2], lambda: params[node.inputs[2]])
    x = _cast(e, step.inputs[0], "INT32")
    zp = e.graph.tensors[node.inputs[0]].quant.zero_point[0]
    if zp:
        x = e.add("Sub", [x, e.const(np.int32(zp))])
    e.add("Add", [e.add("MatMul", [x, w_t]), b])


def _window_ones(node: Node, channels: int) -> np.ndarray:
    return np.ones((channels, 1, *node.attrs["kernel"]), np.float32)


def _int_sum_pool(e: _Emitter, step: Node, node: Node, membranes) -> None:
    """The window sum: a depthwise float Conv by ones (exact, ``_check_exact``), to int32."""
    a = node.attrs
    channels = e.graph.tensors[node.inputs[0]].shape[1]
    ones = _const(e, f"{node.outputs[0]}/ones", lambda: _window_ones(node, channels))
    y = e.add("Conv", [_cast(e, step.inputs[0], "FLOAT"), ones], strides=a["stride"],
              pads=a["padding"], group=channels)
    _cast(e, y, "INT32")


def _int_global_sum(e: _Emitter, step: Node, node: Node, membranes) -> None:
    e.add("ReduceSum", [_cast(e, step.inputs[0], "INT32"), e.const(np.int64([2, 3]))],
          keepdims=1)


def _int_reshape(e: _Emitter, step: Node, node: Node, membranes) -> None:
    _VISITORS["reshape"](e, step, step.inputs)


def _int_add(e: _Emitter, step: Node, node: Node, membranes) -> None:
    """``spikes * m + current`` in int32."""
    tensors = e.graph.tensors
    spikes = 0 if tensors[node.inputs[0]].dtype == "int8" else 1
    m = add_multiplier(tensors[node.inputs[spikes]].quant, tensors[node.inputs[1 - spikes]].quant)
    scaled = e.add("Mul", [_cast(e, step.inputs[spikes], "INT32"), e.const(np.int32(m))])
    e.add("Add", [scaled, step.inputs[1 - spikes]])


def _int_neuron(e: _Emitter, step: Node, node: Node, membranes: dict[str, str]) -> None:
    """One step of integer neurons: ``U = leak(V) + x``; fire where ``U >= θ``, emitting the
    int8 amplitude; ``V = U - θ`` or 0 where fired, else U."""
    tensors, params = e.graph.tensors, e.graph.params
    key = node.inputs[1]
    threshold = _const(e, key, lambda: params[key])
    v = membranes.get(key) or (_const(e, node.inputs[2], lambda: params[node.inputs[2]])
                               if len(node.inputs) > 2 else
                               e.const(np.zeros(params[key].shape, np.int32)))
    if node.op == "lif_neuron":
        product = e.add("Mul", [_cast(e, v, "INT64"),
                                e.const(np.int64(leak_multiplier(node.attrs["leak"])))])
        v = _cast(e, e.add("Div", [product, e.const(np.int64(1 << 15))]), "INT32")
    u = e.add("Add", [v, step.inputs[0]])
    fired = e.add("GreaterOrEqual", [u, threshold])
    zero = e.const(np.int32(0))
    if node.attrs["reset"] == "subtract":
        membranes[key] = e.add("Sub", [u, e.add("Where", [fired, threshold, zero])])
    else:
        membranes[key] = e.add("Where", [fired, zero, u])
    amplitude = _const(e, f"{key}/amplitude", lambda: spike_amplitudes(
        params[key], tensors[node.inputs[0]].quant, tensors[node.outputs[0]].quant))
    e.add("Where", [fired, amplitude, e.const(np.int8(0))])


_INT_VISITORS = {"conv2d": _int_conv, "linear": _int_linear, "avgpool2d": _int_sum_pool,
                 "global_avgpool": _int_global_sum, "reshape": _int_reshape, "add": _int_add,
                 "if_neuron": _int_neuron, "lif_neuron": _int_neuron}


def _check_exact(graph: Graph) -> None:
    """Prove that no float32 Conv partial sum can reach 2^24: bound each tensor's integers
    (the input less its zero point, spike amplitudes, window sums) and each convolution's
    sum of |weights| per output."""
    bounds = {}
    for name in graph.inputs:
        zp = graph.tensors[name].quant.zero_point[0]
        bounds[name] = max(abs(-128 - zp), abs(127 - zp))
    for node in graph.nodes:
        x, out = node.inputs[0], node.outputs[0]
        where = f"{node.op} ({node.name or out})"
        if node.op not in _INT_VISITORS:
            raise EdgekitError(f"{where} has no int8 spiking ONNX form")
        if node.op in NEURON_OPS:
            bounds[out] = int(spike_amplitudes(graph.params[node.inputs[1]],
                                               graph.tensors[x].quant,
                                               graph.tensors[out].quant).max())
        elif node.op in ("avgpool2d", "global_avgpool", "reshape"):
            window = (np.prod(node.attrs["kernel"]) if node.op == "avgpool2d" else
                      np.prod(graph.tensors[x].shape[2:]) if node.op == "global_avgpool" else 1)
            bounds[out] = int(window) * bounds[x]
        elif node.op == "conv2d":
            w = graph.params[node.inputs[1]].astype(np.int64)
            worst = int(np.abs(w).reshape(w.shape[0], -1).sum(axis=1).max()) * bounds[x]
            if worst >= EXACT_LIMIT:
                raise EdgekitError(f"{where}: its float32 Conv in ONNX could sum to {worst} "
                                   ">= 2^24, where float32 stops holding every integer; this "
                                   "int8 SNN has no exact ONNX form (run it on the edgekit "
                                   "runtime)")
        if node.op == "avgpool2d" and bounds[out] >= EXACT_LIMIT:
            raise EdgekitError(f"{where}: its window sum can reach 2^24 in ONNX's float32 "
                               "Conv; this int8 SNN has no exact ONNX form")
