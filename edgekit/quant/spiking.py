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
  ``max(threshold) / 127`` (``numerics.params.neuron_params``, derived from params and quant
  wherever it is needed, so it is never stored twice). LIF leaks by a Q15 multiplier, the
  product truncated toward zero, which ONNX's integer Div reproduces;
- average pooling becomes an exact integer window sum, ``sum_pool2d`` / ``global_sum`` (int32,
  scale divided by the window);
- a residual ``add`` of a spike tensor and a current becomes ``scaled_add``, ``spikes * m +
  current``: the layer producing the current gets one weight scale chosen so that its current's
  scale is the spike scale divided by the integer ``m`` (``numerics.params.scaled_add_params``),
  stored as the op's ``multiplier``;
- outputs are int32 sums over the T steps (the output layer's current, or the output neurons'
  amplitudes) that the edge divides by T and dequantizes (``edge.time_average``).

The float SNN's behaviour changes only by the rounding of weights, thresholds and amplitudes.
Each op's rule is its module's ``quant_spiking`` implementation (``edgekit.ops``); the helpers
they share are the public functions here.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph, Node, QuantParams, TensorInfo
from edgekit.ops import NEURON_OPS, OPS, implementation
from edgekit.quant.calibrate import activation_ranges
from edgekit.quant.quantize import (
    ZERO_RANGE,
    _check_params_finite,
    calibration_feeds,
    quantize_weights,
    range_quant,
)
from edgekit.spiking import is_spiking

PARAM_LIMIT = 2 ** 30  # |threshold|, |initial membrane| in current units: int32 headroom


def quantize_snn(snn: Graph, calibration_data: Any, calibration: str = "minmax",
                 per_channel: bool = True, percentile: float = 99.99) -> Graph:
    """The int8 version of the float spiking Graph ``snn`` (a new Graph); reached through
    ``edgekit.quantize``. Only the input's range is calibrated (``calibration`` as there):
    every other scale follows from the weights and thresholds."""
    if not is_spiking(snn) or snn.metadata.get("quantized"):
        raise EdgekitError("quantize_snn takes a float spiking Graph (converters.snn.to_snn)")
    snn.validate()
    _check_params_finite(snn)
    if snn.metadata.get("encoding", "direct") != "direct":
        raise EdgekitError("int8 SNNs take direct encoding (the analog input at every step); "
                           "run a rate-encoded SNN in float32")
    unsupported = [f"{n.op} ({n.name or n.outputs[0]}: {OPS[n.op].reasons.get('quant_spiking')})"
                   for n in snn.nodes if implementation(n.op, "quant_spiking") is None]
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
        set_tensor(g, name, "int8", range_quant(*(ZERO_RANGE if lo == hi else (lo, hi))))
    partners = _residual_partners(g)
    for node in g.nodes:  # each op's rule may rename it to its integer form
        where = f"{node.op} ({node.name or node.outputs[0]})"
        try:
            implementation(node.op, "quant_spiking").fn(g, node, snn.params, per_channel,
                                                        partners)
        except EdgekitError as err:
            raise EdgekitError(f"{where}: {err}") from None
    g.metadata["quantized"] = "int8"
    g.metadata["quantization"] = {"calibration": calibration, "per_channel": per_channel,
                                  "samples": int(next(iter(feeds.values())).shape[0])}
    return g.validate()


# --- what the ops' rules share ----------------------------------------------------------------

def set_tensor(g: Graph, name: str, dtype: str, quant: QuantParams) -> None:
    """Give tensor ``name`` its int8 spiking dtype and quantization."""
    g.tensors[name] = TensorInfo(g.tensors[name].shape, dtype, quant)


def per_tensor(g: Graph, name: str, what: str) -> QuantParams:
    """The per-tensor quantization of ``name``, which ``what`` reads; a layer's per-channel
    current there means a missing neuron."""
    quant = g.tensors[name].quant
    if quant is None or quant.axis is not None:
        raise EdgekitError(f"{what} reads {name!r}, a layer's current with no neuron between; "
                           "int8 SNNs need a neuron after every conv/linear layer (run this "
                           "SNN in float32)")
    return quant


def quantize_synapse(g: Graph, node: Node, float_params, per_channel, partners) -> None:
    """conv2d/linear: int8 weights, int32 bias and current. A layer whose current a residual
    add sums with spikes gets one weight scale: the spike scale over an integer m."""
    s_in = per_tensor(g, node.inputs[0], node.op).scale[0]
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
    set_tensor(g, node.outputs[0], "int32", QuantParams(
        list(bias.scale), [0] * len(bias.scale), 1 if bias.axis is not None else None))


def _residual_partners(g: Graph) -> dict[str, str]:
    """Each conv/linear output that an ``add`` sums with a neuron's spikes: that spike tensor."""
    producers = g.producers()
    partners = {}
    for node in g.nodes:
        if node.op == "add" and all(n in producers for n in node.inputs):
            a, b = node.inputs
            for spikes, current in ((a, b), (b, a)):
                if (producers[spikes].op in NEURON_OPS
                        and OPS[producers[current].op].int8_weights):
                    partners[current] = spikes
    return partners

