"""Narrow accumulators for int8 layers ("Towards lower bit-width accumulators"): how many bits
a conv/linear layer's sum needs, proven from its weights and its input's range, and how often
a given width overflows on real data.

A layer's accumulator starts at 0 and adds ``(x - zp_in) * w`` one weight at a time (weights in
torch order: input channel, then kernel row and column); the int32 bias joins the finished sum
where it is requantized, in 32 bits, as the paper keeps it out of the narrow sum. With ``n``
bits it holds ``[-2^(n-1), 2^(n-1) - 1]``; a sum that leaves that range saturates (clamps) or wraps
(modulo 2^n). Wrapping is modular, so only the final sum matters; saturating depends on every
partial sum.

``required_bits`` is the static proof: every term lies between ``min(0, w * dlo, w * dhi)``
and ``max(0, w * dlo, w * dhi)``, with ``[dlo, dhi]`` the range of ``x - zp_in`` (the whole
int8 range, or the fused ReLU/ReLU6 range of the layer that produced it, carried through ops
that only move values), so every partial sum in any order lies between the sum of the negative
bounds and the sum of the positive ones; the width that holds both cannot overflow,
saturating or wrapping. ``overflows`` counts what a width does on data:
where no sum of a layer overflows, a narrow accumulator computes exactly the int32 result, so
the int8 model's outputs, and its accuracy, are unchanged.

``narrow`` makes the widths executed: it sets the Graph attribute ``metadata["accumulators"]``
(``{layer output: {"bits": n, "mode": "saturate" | "wrap"}}``) for every layer the proof
passes at ``n`` bits, and the runtime (``runtime.lowbit``) and the firmware (``ek_lowbit.c``)
then sum those layers in an ``n``-bit accumulator, in the order above (``width`` reads it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.graph import Graph, Node
from edgekit.numerics.params import activation_bounds, zero_point
from edgekit.ops import OPS

LAYERS = ("conv1d", "conv2d", "linear")
MODES = ("saturate", "wrap")
WIDTHS = range(8, 33)  # accumulator bits a layer may be given
MOVES_VALUES = ("first_input", "all_inputs")  # ops whose output holds values of their inputs


def _layers(graph: Graph) -> list[Node]:
    """The int8 conv/linear layers: int8 inputs, int8 or packed int4/ternary weights."""
    return [n for n in graph.nodes if n.op in LAYERS
            and graph.tensors[n.inputs[0]].dtype == "int8"
            and graph.tensors[n.inputs[1]].dtype in ("int8", "int4", "ternary")]


def width(graph: Graph, node: Node) -> tuple[int, str] | None:
    """``(bits, mode)`` of ``node``'s accumulator as the Graph attribute sets it (``narrow``),
    or None: an int32 accumulator, as every int8 backend's. A malformed entry is an
    EdgekitError (the runtime and the C writer read it)."""
    from edgekit.errors import EdgekitError

    entry = graph.metadata.get("accumulators", {}).get(node.outputs[0])
    if entry is None:
        return None
    if (not isinstance(entry, dict) or type(entry.get("bits")) is not int
            or entry["bits"] not in WIDTHS or entry.get("mode") not in MODES
            or node.op not in LAYERS):
        raise EdgekitError(f"accumulator of {node.outputs[0]!r}: {entry!r}; a conv/linear "
                           f"layer's is {{'bits': {WIDTHS.start}..{WIDTHS.stop - 1}, 'mode': "
                           f"{' or '.join(map(repr, MODES))}}}")
    return entry["bits"], entry["mode"]


def narrow(graph: Graph, bits: int, mode: str = "saturate") -> Graph:
    """A copy of int8 ``graph`` whose layers the static proof passes at ``bits`` run with a
    ``bits``-wide accumulator (``mode``: saturate or wrap); the others keep int32. Returns the
    copy; ``metadata["accumulators"]`` says which layer got what."""
    import copy

    from edgekit.errors import EdgekitError

    if type(bits) is not int or bits not in WIDTHS or mode not in MODES:
        raise EdgekitError(f"accumulators of {bits!r} bits, {mode!r}: bits in "
                           f"{WIDTHS.start}..{WIDTHS.stop - 1}, mode {' or '.join(MODES)}")
    g = copy.deepcopy(graph)
    g.metadata["accumulators"] = {name: {"bits": bits, "mode": mode}
                                  for name, need in required_bits(g).items() if need <= bits}
    return g


def input_range(graph: Graph, name: str) -> tuple[int, int]:
    """The int8 values tensor ``name`` can hold: a fused ReLU/ReLU6's range where its producer
    (or the value-moving ops after it) says so, else the whole int8 range."""
    producers = graph.producers()
    node = producers.get(name)
    while node is not None:
        activation = node.attrs.get("activation", "none")
        if activation != "none":
            return activation_bounds(activation, graph.tensors[node.outputs[0]].quant)
        if OPS[node.op].quant not in MOVES_VALUES or len(node.inputs) != 1:
            break
        node = producers.get(node.inputs[0])
    return -128, 127


def _rows(graph: Graph, node: Node) -> tuple[np.ndarray, int, int]:
    """int64 weight rows [C, R] (packed ones unpacked) and the range of ``x - zp_in``."""
    from edgekit.numerics import formats

    info, w = graph.tensors[node.inputs[1]], graph.params[node.inputs[1]]
    lo, hi = input_range(graph, node.inputs[0])
    zp = zero_point(graph.tensors[node.inputs[0]].quant)
    row = int(np.prod(info.shape[1:]))
    if info.dtype != "int8":
        w = formats.unpack(w[0], info.dtype, row)
    return w.reshape(len(w), -1).astype(np.int64), lo - zp, hi - zp


def bits_for(low: int, high: int) -> int:
    """The fewest bits of a two's-complement integer holding both ``low`` and ``high``."""
    need = max(high, -low - 1, 0)
    return need.bit_length() + 1


def required_bits(graph: Graph) -> dict[str, int]:
    """Per int8 conv/linear layer (by output tensor), the accumulator width no input can
    overflow, in any order of summation."""
    out = {}
    for node in _layers(graph):
        w, dlo, dhi = _rows(graph, node)
        terms = np.stack([w * dlo, w * dhi])
        high, low = np.maximum(terms.max(0), 0).sum(1), np.minimum(terms.min(0), 0).sum(1)
        out[node.outputs[0]] = max(bits_for(int(lo), int(hi)) for lo, hi in zip(low, high))
    return out


def overflows(graph: Graph, x: Any, bits: int, batch: int = 16) -> dict[str, dict[str, int]]:
    """Per int8 conv/linear layer, on inputs ``x`` (float, as ``Session.run`` takes them): how
    many output values' sums leave a ``bits``-wide accumulator at some step (``saturate``: they
    would clamp) or at the end (``wrap``: they would come out wrong), of ``values``."""
    from edgekit.runtime.executor import Executor

    executor, limit = Executor(graph), (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    counts = {n.outputs[0]: {"saturate": 0, "wrap": 0, "values": 0} for n in _layers(graph)}
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        values = executor.run_layers(chunk)
        values[graph.inputs[0]] = _quantized_input(graph, chunk)
        for node in _layers(graph):
            sums = _partial_sums(graph, node, values[node.inputs[0]])
            c = counts[node.outputs[0]]
            out_of_range = (sums < limit[0]) | (sums > limit[1])
            c["saturate"] += int(out_of_range.any(-1).sum())
            c["wrap"] += int(out_of_range[..., -1].sum())
            c["values"] += int(np.prod(sums.shape[:-1]))
    return counts


def _quantized_input(graph: Graph, x: np.ndarray) -> np.ndarray:
    from edgekit.quant.edge import quantize_array

    return quantize_array(np.asarray(x, np.float32), graph.tensors[graph.inputs[0]].quant)


def _partial_sums(graph: Graph, node: Node, x: np.ndarray) -> np.ndarray:
    """``[..., R]``: the accumulator after each of the R terms, for every output value of the
    layer on int8 input ``x``."""
    from edgekit.ops.util import windows

    w, _, _ = _rows(graph, node)
    zp = zero_point(graph.tensors[node.inputs[0]].quant)
    d = x.astype(np.int64) - zp
    if node.op == "linear":
        terms = d.reshape(-1, 1, d.shape[-1]) * w[None]  # [M, C, R]
    else:
        a = node.attrs
        if node.op == "conv1d":
            d = d[:, :, None]
            geometry = ([1, a["stride"][0]], [0, a["padding"][0], 0, a["padding"][1]],
                        [1, a["dilation"][0]])
            kernel = (1, graph.tensors[node.inputs[1]].shape[2])
        else:
            geometry = (a["stride"], a["padding"], a["dilation"])
            kernel = tuple(graph.tensors[node.inputs[1]].shape[2:])
        win = windows(d, kernel, geometry[0], geometry[1], geometry[2], 0).astype(np.int64)
        n, cin, oh, ow, k = win.shape
        groups, cout = a["groups"], w.shape[0]
        win = win.reshape(n, groups, cin // groups, oh * ow, k).transpose(0, 3, 1, 2, 4)
        win = win.reshape(n * oh * ow, groups, 1, -1)  # [M, G, 1, R] in torch order
        terms = (win * w.reshape(groups, cout // groups, -1)[None]).reshape(n * oh * ow, cout,
                                                                             -1)
    return np.cumsum(terms, axis=-1)


def summary(graph: Graph, x: Any, widths: tuple[int, ...] = (16, 12)) -> list[dict[str, Any]]:
    """Per layer: the proven width and, per width in ``widths``, the overflows on ``x``."""
    proven = required_bits(graph)
    found = {bits: overflows(graph, x, bits) for bits in widths}
    return [{"layer": name, "proven_bits": proven[name],
             **{f"{bits}_bit": found[bits][name] for bits in widths}} for name in proven]


REACH = 255  # the widest |x - zp| of an int8 input: what fit_width's rows are bounded for


def fit_width(q: Graph, float_graph: Graph, bits: int) -> Graph:
    """A copy of int8 Graph ``q`` (quantized from ``float_graph``) whose every int8 conv/linear
    layer ``required_bits`` proves safe at ``bits`` for any int8 input, as A2Q
    (accumulator-aware quantization) bounds each row's L1 norm: per output channel the scale
    ``max(max|w| / 127, sum|w| * 255 / (2^(bits-1) - 1))`` and codes rounded toward zero, so
    ``sum|q| * 255`` fits; the bias is requantized to the new scales. Every such layer is
    requantized this way (the codes ``qat.AccumulatorQuant`` trains), and
    ``metadata["accumulator_bits"]`` records ``bits``; ``narrow`` then runs them at it."""
    import copy

    from edgekit.errors import EdgekitError
    from edgekit.graph import QuantParams

    if type(bits) is not int or bits not in WIDTHS:
        raise EdgekitError(f"fit_width takes {WIDTHS.start}..{WIDTHS.stop - 1} bits, not {bits!r}")
    g = copy.deepcopy(q)
    room = (2 ** (bits - 1) - 1) / REACH
    for node in _layers(g):
        if g.tensors[node.inputs[1]].dtype != "int8":
            continue  # packed int4/ternary rows keep their codes (the check below names them)
        w = float_graph.params[node.inputs[1]].astype(np.float64)
        rows = np.abs(w.reshape(len(w), -1))
        s = np.maximum(rows.max(1) / 127, rows.sum(1) / room)
        s = np.where(s > 0, s, 1.0).astype(np.float32).astype(np.float64)
        bq = g.tensors[node.inputs[2]].quant
        s_in = g.tensors[node.inputs[0]].quant.scale[0]
        bias = np.array(g.params[node.inputs[2]], np.float64) * np.array(bq.scale, np.float64)
        per_row = s.reshape(-1, *[1] * (w.ndim - 1))
        g.params[node.inputs[1]] = np.clip(np.trunc(w / per_row), -127, 127).astype(np.int8)
        g.params[node.inputs[2]] = np.rint(bias / (s_in * s)).astype(np.int32)
        g.tensors[node.inputs[1]].quant = QuantParams([float(v) for v in s], [0] * len(s), 0)
        g.tensors[node.inputs[2]].quant = QuantParams([float(np.float32(s_in * v)) for v in s],
                                                      [0] * len(s), 0)
    g.metadata["accumulator_bits"] = bits
    g.validate()
    late = {k: v for k, v in required_bits(g).items() if v > bits}
    if late:
        raise EdgekitError(f"layers {sorted(late)} still need more than {bits} bits")
    return g
