"""int8 spiking Graphs: int8 weights, integer currents and membranes, no requantization.

``quantize_snn`` turns a float spiking Graph (``converters.snn``) into one whose every value is
an integer that each backend computes identically, because nothing inside the network rounds:

- the input is int8, per tensor and asymmetric from calibration (converted at the edge like
  every int8 Graph's); conv/linear weights int8 symmetric per output channel, biases int32;
- a conv/linear layer's output is an int32 *current*, per-channel scale ``s_in * s_w[c]``,
  zero point 0: the exact integer sum of its int8 or int32 inputs times its weights;
- a neuron keeps an int32 membrane in its input current's scale; its threshold and initial
  membrane are int32 params in that scale. Firing, it subtracts its threshold (or resets to 0)
  and emits an int8 *amplitude*: its threshold in the spike tensor's per-tensor scale
  ``max(threshold) / 127`` (``spike_amplitudes``, derived from params and quant by this one
  function wherever it is needed, so it is never stored twice). LIF leaks by a Q15 multiplier,
  the product truncated toward zero (``leak_multiplier``), which ONNX's integer Div reproduces;
- average pooling becomes an exact integer window sum (int32, scale divided by the window);
- a residual ``add`` of a spike tensor and a current is ``spikes * m + current``: the layer
  producing the current gets one weight scale chosen so that its current's scale is the spike
  scale divided by the integer ``m`` (``add_multiplier``);
- outputs are int32 sums over the T steps (the output layer's current, or the output neurons'
  amplitudes) that the edge divides by T and dequantizes (``edge.time_average``).

The float SNN's behaviour changes only by the rounding of weights, thresholds and amplitudes.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph, Node, QuantParams, TensorInfo
from edgekit.ops import NEURON_OPS
from edgekit.quant.calibrate import activation_ranges
from edgekit.quant.quantize import (
    ZERO_RANGE,
    _check_params_finite,
    calibration_feeds,
    quantize_weights,
    range_quant,
)

LEAK_BITS = 15  # LIF's leak is a Q15 multiplier
PARAM_LIMIT = 2 ** 30  # |threshold|, |initial membrane| in current units: int32 headroom
_SUPPORTED = ("conv2d", "linear", *NEURON_OPS, "avgpool2d", "global_avgpool", "reshape", "add")


def quantize_snn(snn: Graph, calibration_data: Any, calibration: str = "minmax",
                 per_channel: bool = True, percentile: float = 99.99) -> Graph:
    """The int8 version of the float spiking Graph ``snn`` (a new Graph); reached through
    ``edgekit.quantize``. Only the input's range is calibrated (``calibration`` as there):
    every other scale follows from the weights and thresholds."""
    if "timesteps" not in snn.metadata or snn.metadata.get("quantized"):
        raise EdgekitError("quantize_snn takes a float spiking Graph (converters.snn.to_snn)")
    snn.validate()
    _check_params_finite(snn)
    if snn.metadata.get("encoding", "direct") != "direct":
        raise EdgekitError("int8 SNNs take direct encoding (the analog input at every step); "
                           "run a rate-encoded SNN in float32")
    unsupported = [f"{n.op} ({n.name or n.outputs[0]})" for n in snn.nodes
                   if n.op not in _SUPPORTED]
    if unsupported:
        raise EdgekitError(f"no int8 spiking form for {', '.join(unsupported)}; int8 SNNs are "
                           "built from conv2d, linear, neurons, average pools, reshape and "
                           "residual adds: run this SNN in float32")
    feeds = calibration_feeds(snn, calibration_data)
    inputs = Graph(list(snn.inputs), list(snn.inputs),
                   {name: snn.tensors[name] for name in snn.inputs}, [])
    ranges = activation_ranges(inputs, feeds, calibration, percentile)
    g = copy.deepcopy(snn)
    for name in snn.inputs:
        lo, hi = ranges[name]
        _set(g, name, "int8", range_quant(*(ZERO_RANGE if lo == hi else (lo, hi))))
    partners = _residual_partners(g)
    for node in g.nodes:
        where = f"{node.op} ({node.name or node.outputs[0]})"
        try:
            _QUANTIZERS[node.op](g, node, snn.params, per_channel, partners)
        except EdgekitError as err:
            raise EdgekitError(f"{where}: {err}") from None
    g.metadata["quantized"] = "int8"
    g.metadata["quantization"] = {"calibration": calibration, "per_channel": per_channel,
                                  "samples": int(next(iter(feeds.values())).shape[0])}
    return g.validate()


# --- the integers every backend derives from the Graph ---------------------------------------

def current_scales(quant: QuantParams, sample_shape: tuple[int, ...]) -> np.ndarray:
    """Per element of one sample, the scale of an activation quantized per tensor or per
    channel (axis 1 of the batched tensor)."""
    scale = np.asarray(quant.scale, np.float64)
    if quant.axis is None:
        return np.full(sample_shape, scale[0])
    return np.broadcast_to(scale.reshape(-1, *[1] * (len(sample_shape) - 1)), sample_shape)


def spike_amplitudes(threshold: np.ndarray, current: QuantParams,
                     spikes: QuantParams) -> np.ndarray:
    """Each neuron's int8 spike: its int32 threshold ``threshold`` (in the scale of its input
    ``current``) in the spike tensor's scale, at least 1 (a spike is never 0)."""
    real = threshold.astype(np.float64) * current_scales(current, threshold.shape)
    return np.clip(np.rint(real / spikes.scale[0]), 1, 127).astype(np.int8)


def leak_multiplier(leak: float) -> int:
    """LIF's leak as a Q15 integer: ``v <- trunc(v * L / 2^15)`` (IF: ``L = 2^15``)."""
    return int(round(leak * (1 << LEAK_BITS)))


def add_multiplier(spikes: QuantParams, current: QuantParams) -> int:
    """The integer m of a residual add ``spikes * m + current``: the ratio of the two scales,
    which the quantizer makes an integer (up to float32 rounding of the stored scales)."""
    return int(round(spikes.scale[0] / current.scale[0]))


# --- per op ----------------------------------------------------------------------------------

def _set(g: Graph, name: str, dtype: str, quant: QuantParams) -> None:
    g.tensors[name] = TensorInfo(g.tensors[name].shape, dtype, quant)


def _per_tensor(g: Graph, name: str, what: str) -> QuantParams:
    quant = g.tensors[name].quant
    if quant is None or quant.axis is not None:
        raise EdgekitError(f"{what} reads {name!r}, a layer's current with no neuron between; "
                           "int8 SNNs need a neuron after every conv/linear layer (run this "
                           "SNN in float32)")
    return quant


def _weighted(g: Graph, node: Node, float_params, per_channel, partners) -> None:
    """conv2d/linear: int8 weights, int32 bias and current. A layer whose current a residual
    add sums with spikes gets one weight scale: the spike scale over an integer m."""
    s_in = _per_tensor(g, node.inputs[0], node.op).scale[0]
    weight_scale = None
    spikes = partners.get(node.outputs[0])
    if spikes is not None:
        if g.tensors[spikes].quant is None:
            raise EdgekitError(f"it is added to the spikes {spikes!r}, which come after it; "
                               "run this SNN in float32")
        s_spk = g.tensors[spikes].quant.scale[0]
        w_max = float(np.abs(float_params[node.inputs[1]]).max()) or 1.0
        m = math.floor(s_spk * 127 / (s_in * w_max))
        if m < 1:
            raise EdgekitError(f"its weights (max {w_max:.3g}) are too large to align its "
                               f"current with the spikes {spikes!r} it is added to in int8; "
                               "run this SNN in float32")
        weight_scale = s_spk / (m * s_in)
    quantize_weights(g, node, float_params, per_channel, weight_scale)
    bias = g.tensors[node.inputs[2]].quant
    _set(g, node.outputs[0], "int32",
         QuantParams(list(bias.scale), [0] * len(bias.scale), 1 if bias.axis is not None else None))


def _neuron(g: Graph, node: Node, float_params, per_channel, partners) -> None:
    """Threshold and initial membrane to int32 in the input current's scale; the spikes int8
    with scale ``max threshold / 127``."""
    current = g.tensors[node.inputs[0]].quant
    if current is None or g.tensors[node.inputs[0]].dtype != "int32":
        raise EdgekitError("a neuron's input must be a conv/linear layer's current")
    if node.op == "lif_neuron" and leak_multiplier(node.attrs["leak"]) < 1:
        raise EdgekitError(f"leak {node.attrs['leak']} is below 2^-{LEAK_BITS}")
    shape = g.tensors[node.outputs[0]].shape[1:]
    scales = current_scales(current, shape)
    param_quant = QuantParams(list(current.scale), [0] * len(current.scale),
                              None if current.axis is None else 0)
    threshold = np.maximum(np.rint(float_params[node.inputs[1]] / scales), 1)
    for name, value in zip(node.inputs[1:], (threshold, *(
            np.rint(float_params[n] / scales) for n in node.inputs[2:])), strict=True):
        if np.abs(value).max() >= PARAM_LIMIT:
            raise EdgekitError(f"{name!r} is {np.abs(value).max():.3g} current units, beyond "
                               "int32's headroom; run this SNN in float32")
        g.params[name] = value.astype(np.int32)
        _set(g, name, "int32", copy.deepcopy(param_quant))
    peak = float((threshold * scales).max())
    _set(g, node.outputs[0], "int8", QuantParams([float(np.float32(peak / 127))], [0]))


def _pool(g: Graph, node: Node, *_) -> None:
    """Average pooling as a window sum: int32, the input's scale over the window size."""
    quant = _per_tensor(g, node.inputs[0], node.op)
    if quant.zero_point[0] != 0:
        raise EdgekitError("pooling the raw input has no int8 spiking form; run in float32")
    if node.op == "global_avgpool":
        window = math.prod(g.tensors[node.inputs[0]].shape[2:])
    else:
        window = math.prod(node.attrs["kernel"])
        if any(node.attrs["padding"]) and not node.attrs["count_include_pad"]:
            raise EdgekitError("a padded average pool that leaves the padding out of its divisor "
                               "is no integer sum; pool with count_include_pad or run in float32")
    _set(g, node.outputs[0], "int32", QuantParams([float(np.float32(quant.scale[0] / window))],
                                                  [0]))


def _reshape(g: Graph, node: Node, *_) -> None:
    source = g.tensors[node.inputs[0]]
    _per_tensor(g, node.inputs[0], node.op)
    _set(g, node.outputs[0], source.dtype, copy.deepcopy(source.quant))


def _add(g: Graph, node: Node, *_) -> None:
    """``spikes * m + current``: int32 in the current's (per-tensor) scale."""
    kinds = sorted(g.tensors[name].dtype for name in node.inputs)
    if kinds != ["int32", "int8"] or node.inputs[1] in g.params:
        raise EdgekitError("int8 SNNs add a spike tensor to a layer's current (a residual "
                           "connection), nothing else; run this SNN in float32")
    current = next(n for n in node.inputs if g.tensors[n].dtype == "int32")
    quant = _per_tensor(g, current, "add")
    _set(g, node.outputs[0], "int32", copy.deepcopy(quant))


def _residual_partners(g: Graph) -> dict[str, str]:
    """Each conv/linear output that an ``add`` sums with a neuron's spikes: that spike tensor."""
    producers = g.producers()
    partners = {}
    for node in g.nodes:
        if node.op == "add" and all(n in producers for n in node.inputs):
            a, b = node.inputs
            for spikes, current in ((a, b), (b, a)):
                if (producers[spikes].op in NEURON_OPS
                        and producers[current].op in ("conv2d", "linear")):
                    partners[current] = spikes
    return partners


_QUANTIZERS = {"conv2d": _weighted, "linear": _weighted, "if_neuron": _neuron,
               "lif_neuron": _neuron, "avgpool2d": _pool, "global_avgpool": _pool,
               "reshape": _reshape, "add": _add}
