"""Graph → Graph clean-up shared by every importer: fold per-channel affine ops into the conv or
linear before them (this is how batch norm disappears), fuse ReLU/ReLU6 into their producer, and
fold a zero pad into the convolution it feeds (TF "same" padding written as F.pad + conv) and
merge pads in a row.

Both rewrite only when the producer's output has no other consumer and is not a graph output,
so the Graph computes exactly what it did before.
"""

from __future__ import annotations

import numpy as np

from edgekit.graph import Graph, Node, TensorInfo
from edgekit.ops import OPS

_FUSABLE = {"relu": "relu", "relu6": "relu6"}


def optimize(graph: Graph) -> Graph:
    while (_fold_affine_once(graph) or _fuse_activation_once(graph) or _merge_pads_once(graph)
           or _fold_pad_once(graph)):
        pass
    _drop_unused_params(graph)
    return graph


def _sole_producer(graph: Graph, node: Node) -> Node | None:
    """The node producing ``node``'s first input, if ``node`` is its only consumer."""
    x = node.inputs[0]
    if x in graph.outputs or len(graph.consumers().get(x, [])) != 1:
        return None
    return graph.producers().get(x)


def _channel_vector(graph: Graph, producer: Node, const: str) -> np.ndarray | None:
    """``const`` as one value per output channel of ``producer``, if it broadcasts that way."""
    value = graph.params.get(const)
    if value is None:
        return None
    out_shape = graph.tensors[producer.outputs[0]].shape
    channels = graph.params[producer.inputs[1]].shape[0]
    channel_axis = len(out_shape) - 1 if producer.op == "linear" else 1
    if value.ndim > len(out_shape) or value.size not in (1, channels):
        return None
    padded = value.reshape((1,) * (len(out_shape) - value.ndim) + value.shape)
    if any(d != 1 for i, d in enumerate(padded.shape) if i != channel_axis):
        return None
    return np.broadcast_to(padded.reshape(-1), (channels,)).astype(np.float64)


def _fold_affine_once(graph: Graph) -> bool:
    for node in graph.nodes:
        if node.op not in ("mul", "add") or node.attrs.get("activation", "none") != "none":
            continue
        producer = _sole_producer(graph, node)
        if producer is None or not OPS[producer.op].int8_weights:  # weight rows per channel
            continue
        if producer.attrs.get("activation", "none") != "none":
            continue
        vec = _channel_vector(graph, producer, node.inputs[1])
        if vec is None or _shared(graph, producer):
            continue
        w_name = producer.inputs[1]
        w = graph.params[w_name].astype(np.float64)
        bias = (graph.params[producer.inputs[2]].astype(np.float64) if len(producer.inputs) > 2
                else np.zeros(w.shape[0]))
        if node.op == "mul":
            w = w * vec.reshape(-1, *([1] * (w.ndim - 1)))
            bias = bias * vec
        else:
            bias = bias + vec
        graph.params[w_name] = w.astype(np.float32)
        if len(producer.inputs) == 2:
            b_name = f"{w_name}.bias"
            while b_name in graph.tensors:
                b_name += "_"
            graph.tensors[b_name] = TensorInfo((w.shape[0],))
            producer.inputs.append(b_name)
        graph.params[producer.inputs[2]] = bias.astype(np.float32)
        _bypass(graph, node, producer)
        return True
    return False


def _fuse_activation_once(graph: Graph) -> bool:
    for node in graph.nodes:
        if node.op not in _FUSABLE:
            continue
        producer = _sole_producer(graph, node)
        if producer is None or producer.attrs.get("activation") != "none":
            continue
        producer.attrs["activation"] = _FUSABLE[node.op]
        _bypass(graph, node, producer)
        return True
    return False


def _merge_pads_once(graph: Graph) -> bool:
    """Two pads in a row of one mode and value that pad different axes (core ATen writes a
    reflect or replicate pad one axis at a time) become one pad: per axis it is the same."""
    for node in graph.nodes:
        first = _sole_producer(graph, node) if node.op == "pad" else None
        if first is None or first.op != "pad" or any(
                first.attrs[key] != node.attrs[key] for key in ("mode", "value")):
            continue
        a, b = first.attrs["pads"], node.attrs["pads"]
        k = len(a) // 2
        if any((a[i] or a[i + k]) and (b[i] or b[i + k]) for i in range(k)):
            continue
        node.attrs["pads"] = [p + q for p, q in zip(a, b, strict=True)]
        _drop_producer(graph, node, first)
        return True
    return False


def _fold_pad_once(graph: Graph) -> bool:
    """A constant zero pad of the spatial axes read only by a conv1d/conv2d becomes part of the
    conv's own padding (asymmetric allowed on every backend): exact in float, and in int8,
    where both pad with the input's zero point. One copy fewer on the microcontroller."""
    for node in graph.nodes:
        if node.op not in ("conv1d", "conv2d"):
            continue
        pad = _sole_producer(graph, node)
        if pad is None or pad.op != "pad" or pad.attrs["mode"] != "constant" \
                or pad.attrs["value"] != 0:
            continue
        pads, padding = pad.attrs["pads"], node.attrs["padding"]
        k = len(pads) // 2
        if pads[0] or pads[k]:  # the channel axis
            continue
        spatial = pads[1:k] + pads[k + 1:]
        node.attrs["padding"] = [p + q for p, q in zip(padding, spatial, strict=True)]
        _drop_producer(graph, node, pad)
        return True
    return False


def _drop_producer(graph: Graph, node: Node, producer: Node) -> None:
    """``node`` reads ``producer``'s input instead, and ``producer`` (whose work ``node`` has
    taken over) goes with its output."""
    node.inputs[0] = producer.inputs[0]
    graph.nodes.remove(producer)
    del graph.tensors[producer.outputs[0]]


def _shared(graph: Graph, producer: Node) -> bool:
    """Whether another node also reads the producer's weight or bias (folding would change it)."""
    users = graph.consumers()
    return any(len(users[p]) > 1 for p in producer.inputs[1:])


def _bypass(graph: Graph, node: Node, producer: Node) -> None:
    """Remove ``node``; the producer now writes ``node``'s output tensor directly."""
    old = producer.outputs[0]
    producer.outputs = [node.outputs[0]]
    graph.nodes.remove(node)
    del graph.tensors[old]


def _drop_unused_params(graph: Graph) -> None:
    used = {name for node in graph.nodes for name in node.inputs}
    for name in [p for p in graph.params if p not in used]:
        del graph.params[name]
        del graph.tensors[name]
