"""``edgekit.quantize``: post-training int8 quantization of a float Graph.

The result is the int8 Graph of ``docs/quantized-graph.md``, the one layout every int8 backend
reads: activations (and constant operands of add/mul/concat) int8 per tensor and asymmetric,
conv/linear weights int8 symmetric per output channel, biases int32. Ranges come from running
the float Graph on calibration data (``calibrate.py``); ops that cannot requantize (pools,
reshape, relu, concat) share one quantization between input and output, so their ranges merge.

Every scale is rounded to float32 here, as a ``.tflite`` file stores it, so that the multipliers
each backend derives from the Graph's scales are the same numbers everywhere.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph, Node, QuantParams, TensorInfo
from edgekit.ops import OPS
from edgekit.quant import lowbit
from edgekit.quant.calibrate import METHODS, Range, activation_ranges, range_scale_zero_point
from edgekit.quant.edge import quantize_array
from edgekit.spiking import is_spiking

# the weight formats below int8 (quant.lowbit), and a format per layer (quant.mixed)
SCHEMES = ("int8", *lowbit.FORMAT, "mixed", *lowbit.INT8_ACTIVATIONS)
# How an op's output quantization is chosen is its OpDef's ``quant``: calibrated, kept from the
# inputs of ops that move values without rescaling, or fixed (softmax, as TFLite's).
SHARED_INPUTS = {"first_input": slice(0, 1), "all_inputs": slice(None)}
BIAS_LIMIT = 2.0 ** 30  # |int32 bias| stays below this: headroom for the accumulation
ZERO_RANGE = (0.0, 1.0)  # given to a tensor that was 0 on every calibration sample


def quantize(graph: Graph, calibration_data: Any, scheme: str = "int8",
             calibration: str = "minmax", per_channel: bool = True,
             percentile: float = 99.99, *, group_size: int | None = None,
             rex: int = 1, size_bytes: float | None = None,
             energy_uj: float | None = None, formats: dict[str, str] | None = None) -> Graph:
    """The int8 version of ``graph`` (a new Graph; ``graph`` is left as it is); a spiking
    Graph (``metadata["timesteps"]``) becomes an int8 SNN (``quant.spiking.quantize_snn``).

    ``calibration_data``: float samples shaped like the graph input with any batch size (a dict
    or list for several inputs); a few hundred representative samples are plenty.
    ``calibration``: ``"minmax"`` (observed extremes), ``"percentile"`` (each side clipped at the
    ``percentile`` of its magnitudes) or ``"mse"`` (the clipping with the least int8 error).
    ``per_channel=False`` gives conv/linear weights one scale per tensor instead of per channel.

    ``scheme`` ``"int4"``, ``"ternary"``, ``"fp8_e4m3"``, ``"fp8_e5m2"`` or ``"fp16"`` stores the
    conv/linear weights packed in that format and keeps float32 activations
    (``quant.lowbit``, ``docs/low-bit.md``); ``group_size`` gives a scale to each group of that
    many weights of a channel, ``rex`` (int4) adds REx residual orders (2 or 3).
    ``"mixed"`` picks one of those formats per layer by a sensitivity search on the
    calibration data, within ``size_bytes`` (model bytes) or ``energy_uj`` (modelled energy
    per inference on the cortex-m4 profile), or as ``formats`` says (weight name -> scheme):
    ``quant.mixed``. ``"int4_a8"`` and ``"ternary_a8"`` are int8 Graphs whose conv/linear
    weights are int4 or ternary codes stored packed (int8 activations: what the
    microcontroller firmware runs, ``quant.lowbit``).
    """
    _check_options(graph, scheme, calibration, per_channel, percentile)
    lowbit.check_options(scheme, group_size, rex,
                         (size_bytes, energy_uj, formats) != (None, None, None))
    weight_format = lowbit.INT8_ACTIVATIONS.get(scheme)
    if scheme != "int8" and weight_format is None:
        if is_spiking(graph):
            raise EdgekitError(f"scheme {scheme!r} is for float Graphs; a spiking Graph "
                               "quantizes to int8")
        graph.validate()
        _check_params_finite(graph)
        feeds = calibration_feeds(graph, calibration_data)
        if scheme == "mixed":
            from edgekit.quant.mixed import quantize_mixed

            return quantize_mixed(graph, feeds, size_bytes, energy_uj, formats,
                                  per_channel=per_channel)
        return lowbit.quantize_weights(graph, scheme, group_size, rex, per_channel)
    if is_spiking(graph):
        if weight_format:
            raise EdgekitError(f"scheme {scheme!r} is for float Graphs; a spiking Graph "
                               "quantizes to int8")
        from edgekit.quant.spiking import quantize_snn

        return quantize_snn(graph, calibration_data, calibration, per_channel, percentile)
    graph.validate()
    _check_params_finite(graph)
    feeds = calibration_feeds(graph, calibration_data)
    ranges = activation_ranges(graph, feeds, calibration, percentile)
    g = copy.deepcopy(graph)
    for name, quant in _value_quants(g, ranges).items():
        g.tensors[name].dtype, g.tensors[name].quant = "int8", quant
        if name in g.params:
            g.params[name] = quantize_array(g.params[name], quant)
    for node in g.nodes:
        if OPS[node.op].int8_weights:
            quantize_weights(g, node, graph.params, per_channel,
                             weight_format=weight_format if node.op in lowbit.WEIGHTED else None)
    _drop_unused_params(g)
    g.metadata["quantized"] = "int8"
    g.metadata["quantization"] = {"calibration": calibration, "per_channel": per_channel,
                                  "samples": int(next(iter(feeds.values())).shape[0])}
    if weight_format:
        g.metadata["quantization"].update(scheme=scheme, weights=weight_format)
    return g.validate()


def range_quant(lo: float, hi: float) -> QuantParams:
    scale, zero_point = range_scale_zero_point(lo, hi)
    return QuantParams([float(scale)], [int(zero_point)])


# --- arguments and calibration data ----------------------------------------------------------

def _check_options(graph: Graph, scheme: str, calibration: str, per_channel: bool,
                   percentile: float) -> None:
    if scheme not in SCHEMES:
        raise EdgekitError(f"unknown quantization scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    if calibration not in METHODS:
        raise EdgekitError(f"unknown calibration {calibration!r}; known: {', '.join(METHODS)}")
    if type(per_channel) is not bool:
        raise EdgekitError(f"per_channel must be True or False, got {per_channel!r}")
    if not (isinstance(percentile, (int, float)) and 50 < percentile <= 100):
        raise EdgekitError(f"percentile must be a number in (50, 100], got {percentile!r}")
    if graph.metadata.get("quantized"):
        raise EdgekitError(f"the graph is already quantized ({graph.metadata['quantized']}); "
                           "quantize the float graph it came from")


def _arrays(data: Any) -> list[Any]:
    if isinstance(data, dict):
        return list(data.values())
    return list(data) if isinstance(data, (list, tuple)) else [data]


def calibration_feeds(graph: Graph, data: Any) -> dict[str, np.ndarray]:
    """Calibration samples by graph input, float32 (int32 indices stay integers), checked:
    shape, non-empty, finite."""
    names = graph.inputs
    if isinstance(data, dict) and set(data) != set(names):
        raise EdgekitError(f"calibration data has inputs {sorted(data)}, the graph takes {names}")
    arrays = [data[n] for n in names] if isinstance(data, dict) else _arrays(data)
    if len(arrays) != len(names):
        raise EdgekitError(f"calibration data has {len(arrays)} arrays, the graph takes "
                           f"{len(names)} inputs {names}")
    feeds = {}
    for name, value in zip(names, arrays, strict=True):
        x, shape = np.asarray(value), graph.tensors[name].shape
        expected = "(N, " + ", ".join(map(str, shape[1:])) + ")"
        if x.dtype.kind not in "fiu" or x.ndim != len(shape) or x.shape[1:] != shape[1:]:
            raise EdgekitError(f"calibration data for input {name!r}: expected real numbers "
                               f"shaped {expected}, got {x.dtype} {x.shape}")
        if x.shape[0] == 0:
            raise EdgekitError(f"calibration data for input {name!r} is empty: pass at least "
                               "one sample (a few hundred representative ones are best)")
        if not np.isfinite(x).all():
            raise EdgekitError(f"calibration data for input {name!r} holds NaN or infinity "
                               f"({int((~np.isfinite(x)).sum())} values)")
        if graph.tensors[name].dtype == "int32" and x.dtype.kind not in "iu":
            raise EdgekitError(f"calibration data for input {name!r}: expected integer indices, "
                               f"got {x.dtype}")
        feeds[name] = np.ascontiguousarray(x, graph.tensors[name].dtype)
    if len({x.shape[0] for x in feeds.values()}) > 1:
        raise EdgekitError("calibration data: the inputs have different numbers of samples "
                           f"{[x.shape[0] for x in feeds.values()]}")
    return feeds


def _check_params_finite(graph: Graph) -> None:
    bad = [name for name, v in graph.params.items() if not np.isfinite(v).all()]
    if bad:
        raise EdgekitError(f"cannot quantize: NaN or infinite values in weights {bad}")


# --- activations -----------------------------------------------------------------------------

def _value_quants(g: Graph, ranges: dict[str, Range]) -> dict[str, QuantParams]:
    """The int8 quantization of every value tensor: activations, and params that ops read as
    data (add/mul/concat operands), which take their range from their own values. int32
    indices stay as they are."""
    ranges = {name: r for name, r in ranges.items() if g.tensors[name].dtype == "float32"}
    for node in g.nodes:
        for slot, name in enumerate(node.inputs):
            if name in g.params and slot not in OPS[node.op].weight_inputs:
                v = g.params[name]
                ranges[name] = (min(0.0, float(v.min())), max(0.0, float(v.max())))
    root = _share_groups(g, ranges)
    merged: dict[str, Range] = {}
    for name, (lo, hi) in ranges.items():
        old_lo, old_hi = merged.get(root[name], (0.0, 0.0))
        merged[root[name]] = (min(old_lo, lo), max(old_hi, hi))
    fixed = {root[n.outputs[0]]: OPS[n.op].quant for n in g.nodes
             if isinstance(OPS[n.op].quant, tuple)}
    quants = {rep: _group_quant(rep, merged[rep], fixed.get(rep), root) for rep in merged}
    return {name: copy.deepcopy(quants[root[name]]) for name in ranges}


def _share_groups(g: Graph, names: dict[str, Range]) -> dict[str, str]:
    """Each tensor's group representative: tensors that must share one quantization."""
    parent = {name: name for name in names}

    def find(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for node in g.nodes:
        if OPS[node.op].quant in SHARED_INPUTS:
            for name in node.inputs[SHARED_INPUTS[OPS[node.op].quant]]:
                if name in parent:  # not int32 indices
                    parent[find(name)] = find(node.outputs[0])
    # groups the model asks for: an anytime network's residual stream, whose paths read one
    # of these tensors in place of another (edgekit.anytime.table)
    for group in g.metadata.get("quant_groups", []):
        present = [name for name in group if name in parent]
        for name in present[1:]:
            parent[find(name)] = find(present[0])
    return {name: find(name) for name in names}


def _group_quant(rep: str, rng: Range, fixed: tuple[float, int] | None,
                 root: dict[str, str]) -> QuantParams:
    if fixed is not None:
        return QuantParams([fixed[0]], [fixed[1]])
    if rng[0] == rng[1]:
        members = sorted(name for name, r in root.items() if r == rep)
        warnings.warn(f"quantize: {members} were 0 on every calibration sample; gave them the "
                      f"range {list(ZERO_RANGE)} (scale 1/255, zero point -128) so that 0 stays "
                      "exact. Calibrate with more varied data if they should not be 0.",
                      stacklevel=4)
        rng = ZERO_RANGE
    return range_quant(*rng)


# --- weights and biases ----------------------------------------------------------------------

def quantize_weights(g: Graph, node: Node, float_params: dict[str, np.ndarray],
                     per_channel: bool, weight_scale: float | None = None,
                     weight_format: str | None = None) -> None:
    """Weight int8 symmetric per output channel (axis 0, [-127, 127]); bias int32 at scale
    ``s_in * s_w``, created as zeros when the layer had none. ``weight_scale`` imposes one
    per-tensor scale instead (an int8 SNN aligns a current with a spike tensor that way);
    ``weight_format`` (``"int4"``, ``"ternary"``) stores the weight packed in that format
    (``lowbit.int8_weight``), its scales being the format's.

    A channel whose bias would not fit the int32 headroom at ``s_in * max|w| / 127`` (weights
    tiny next to the bias, as batch-norm folding leaves a dead channel) gets the larger weight
    scale that fits it; a channel of zero weights and zero bias gets the tiny scale
    ``1 / (s_in * 2^30)`` (never 0: scales must be positive).
    """
    s_in = g.tensors[node.inputs[0]].quant.scale[0]
    w = float_params[node.inputs[1]].astype(np.float64)
    channels = w.shape[0]
    b = (float_params[node.inputs[2]].astype(np.float64) if len(node.inputs) > 2
         else np.zeros(channels))
    magnitude = np.abs(w).reshape(channels, -1).max(axis=1)
    if not per_channel:
        magnitude, b_mag = magnitude.max(keepdims=True), np.abs(b).max(keepdims=True)
    else:
        b_mag = np.abs(b)
    s_w = np.maximum(magnitude / 127, b_mag / (s_in * BIAS_LIMIT) * (1 + 2**-20))  # > float32 ulp
    s_w = np.where(s_w > 0, s_w, 1 / (s_in * BIAS_LIMIT))
    if weight_scale is not None:
        s_w, per_channel = np.array([weight_scale]), False
    s_w = s_w.astype(np.float32).astype(np.float64)
    axis = 0 if per_channel else None
    per_row = s_w.reshape(-1, *[1] * (w.ndim - 1))
    if weight_format:
        storage, scales = lowbit.int8_weight(w, weight_format, per_channel)
        s_w, axis = scales.astype(np.float64), 0
        g.params[node.inputs[1]] = storage
        g.tensors[node.inputs[1]].dtype = weight_format
        g.tensors[node.inputs[1]].quant = QuantParams([float(s) for s in s_w], [0] * len(s_w), 0)
    else:
        _set(g, node.inputs[1], np.clip(np.rint(w / per_row), -127, 127).astype(np.int8),
             QuantParams([float(s) for s in s_w], [0] * len(s_w), axis))
    bias_scale = s_in * s_w
    bias = np.rint(b / bias_scale)
    if weight_format and np.abs(bias).max(initial=0) >= BIAS_LIMIT:
        raise EdgekitError(f"node {node.name or node.outputs[0]!r}: its bias needs more than "
                           f"int32 at the {weight_format} weights' scales; quantize it to int8")
    bias_name = _bias_name(g, node)
    _set(g, bias_name, bias.astype(np.int32),
         QuantParams([float(np.float32(s)) for s in bias_scale], [0] * len(s_w), axis))


def _bias_name(g: Graph, node: Node) -> str:
    """The node's own bias tensor: its bias if no other node reads it, else a new one."""
    users = g.consumers()
    if len(node.inputs) > 2 and len(users[node.inputs[2]]) == 1:
        return node.inputs[2]
    name = f"{node.outputs[0]}.bias"
    while name in g.tensors:
        name += "_"
    g.tensors[name] = TensorInfo((g.tensors[node.inputs[1]].shape[0],))
    node.inputs[2:] = [name]
    return name


def _set(g: Graph, name: str, value: np.ndarray, quant: QuantParams) -> None:
    g.params[name] = value
    g.tensors[name].dtype, g.tensors[name].quant = str(value.dtype), quant


def _drop_unused_params(g: Graph) -> None:
    used = {name for node in g.nodes for name in node.inputs}
    for name in [p for p in g.params if p not in used]:
        del g.params[name], g.tensors[name]

