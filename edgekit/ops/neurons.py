"""Spiking neurons: if_neuron and lif_neuron, with every backend's implementation.

A neuron keeps a membrane across the time steps of a spiking Graph (``edgekit.spiking``: the
Graph's ``metadata["timesteps"]`` says how many): ``V = leak * V + x``; where ``V >= threshold``
it emits its threshold (float32) or its int8 amplitude (int8 spiking Graphs,
``numerics.params.neuron_params``) and subtracts its threshold or resets to 0. The state is
why every backend here is a spiking one: the spiking runtime holds membranes in its steps,
the unrolled ONNX writer carries them from step to step, the firmware keeps static arrays.
"""

from __future__ import annotations

import numpy as np

from edgekit.ops import declare
from edgekit.ops.schema import OpDef, fail

NEURON_RESETS = ("subtract", "zero")


def _shape(s, a):
    """A spiking neuron keeps one membrane per element of its input; its threshold and optional
    initial membrane are params of the per-sample shape (per neuron; a per-channel threshold is
    stored expanded)."""
    if a["reset"] not in NEURON_RESETS:
        fail(f"reset must be one of {NEURON_RESETS}, got {a['reset']!r}")
    if not 0.0 < a.get("leak", 1.0) <= 1.0:
        fail(f"leak must be in (0, 1], got {a['leak']}")
    for p in s[1:]:
        if tuple(p) != tuple(s[0][1:]):
            fail(f"neuron params must have the per-sample shape {s[0][1:]}, got {p}")
    return tuple(s[0])


_DOC = ("charge V = {leak}V + x, fire s = V >= threshold, reset (subtract the threshold or to "
        "zero); output s * threshold; inputs x, threshold[, initial membrane]")

if_neuron = declare(OpDef("if_neuron", (2, 3), {"reset": "subtract"}, _shape,
                          weight_inputs=(1, 2), neuron=True, doc=_DOC.format(leak="")))
lif_neuron = declare(OpDef("lif_neuron", (2, 3), {"reset": "subtract", "leak": 0.9}, _shape,
                           weight_inputs=(1, 2), neuron=True, doc=_DOC.format(leak="leak * ")))

_REASONS = {
    "float32": "a neuron's membrane lives across time steps: spiking Graphs run on the spiking "
               "runtime (edgekit.runtime.spiking)",
    "torch": "neurons are made by converting an ANN (converters.snn.to_snn), not imported",
    "tflite": "TFLite has no neuron state across time steps",
    "onnx": "a neuron's membrane lives across time steps: converters.snn_onnx writes the "
            "time-unrolled model",
    "c": "a neuron's membrane lives across time steps: converters.to_c_snn writes the "
         "firmware's time loop",
    "learn": "edgekit.learn trains ANNs; convert the trained ANN with converters.snn.to_snn",
}
_REASONS["int8"] = _REASONS["float32"]
_REASONS["onnx_import"] = _REASONS["torch"]


def _float_step(ins, out, *, reset, leak=1.0):
    from edgekit.runtime.kernels import spiking
    from edgekit.runtime.spiking import NeuronStep

    x, threshold = ins[0], ins[1]
    v_init = ins[2] if len(ins) > 2 else np.zeros_like(threshold)
    return NeuronStep(spiking.neuron_step, x, threshold, v_init, np.float32(leak),
                      reset == "subtract", out)


def _int8_step(ins, out, *, quant, reset, leak=1.0):
    from edgekit.numerics.params import neuron_params
    from edgekit.runtime.kernels import spiking
    from edgekit.runtime.spiking import NeuronStep

    p = neuron_params(ins[1], ins[2] if len(ins) > 2 else None, quant[0], quant[-1],
                      reset=reset, leak=leak)
    return NeuronStep(spiking.int_neuron_step, ins[0], p.threshold, p.v_init, np.int64(p.leak),
                      p.subtract, out, p.amplitude.reshape(-1))


def _quantize(g, node, float_params, per_channel, partners):
    """Threshold and initial membrane to int32 in the input current's scale; the spikes int8
    with scale ``max threshold / 127``."""
    from edgekit.errors import EdgekitError
    from edgekit.graph import QuantParams
    from edgekit.numerics.params import LEAK_BITS, current_scales, leak_multiplier
    from edgekit.quant.spiking import PARAM_LIMIT, set_tensor

    current = g.tensors[node.inputs[0]].quant
    if current is None or g.tensors[node.inputs[0]].dtype != "int32":
        raise EdgekitError("a neuron's input must be a conv/linear layer's current")
    if leak_multiplier(node.attrs.get("leak", 1.0)) < 1:
        raise EdgekitError(f"leak {node.attrs['leak']} is below 2^-{LEAK_BITS}")
    scales = current_scales(current, g.tensors[node.outputs[0]].shape[1:])
    threshold = np.maximum(np.rint(float_params[node.inputs[1]] / scales), 1)
    values = (threshold, *(np.rint(float_params[n] / scales) for n in node.inputs[2:]))
    for name, value in zip(node.inputs[1:], values, strict=True):
        if np.abs(value).max() >= PARAM_LIMIT:
            raise EdgekitError(f"{name!r} is {np.abs(value).max():.3g} current units, beyond "
                               "int32's headroom; run this SNN in float32")
        g.params[name] = value.astype(np.int32)
        set_tensor(g, name, "int32", QuantParams(list(current.scale), [0] * len(current.scale),
                                                 None if current.axis is None else 0))
    peak = float((threshold * scales).max())
    set_tensor(g, node.outputs[0], "int8", QuantParams([float(np.float32(peak / 127))], [0]))


def _params(graph, node):
    """An int8 spiking Graph's neuron layer as integers (``numerics.params.neuron_params``)."""
    from edgekit.numerics.params import neuron_params

    tensors, values = graph.tensors, graph.params
    return neuron_params(values[node.inputs[1]],
                         values[node.inputs[2]] if len(node.inputs) > 2 else None,
                         tensors[node.inputs[0]].quant, tensors[node.outputs[0]].quant,
                         **node.attrs)


def _onnx(e, step, node):
    """One step of a neuron layer, its membrane so far in ``e.membranes`` under its threshold
    param's name: ``U = leak(V) + x``; fire where ``U >= θ``; ``V = U - θ`` or 0 where fired.
    int8: int32 membranes, LIF's Q15 leak an int64 Mul and truncating Div as the runtime's, the
    int8 amplitude out. float32: ``out = S·θ`` with ``S = Cast(U >= θ)``."""
    from onnx import TensorProto

    key = node.inputs[1]
    if e.integer:
        p = _params(e.graph, node)
        e.bounds[node.outputs[0]] = int(p.amplitude.max())
        threshold = e.once(key, lambda: p.threshold)
        v = e.membranes.get(key) or e.once(f"{key}/v_init", lambda: p.v_init)
        if node.op == "lif_neuron":
            product = e.add("Mul", [e.cast(v, "INT64"), e.const(np.int64(p.leak))])
            v = e.cast(e.add("Div", [product, e.const(np.int64(1 << 15))]), "INT32")
        u = e.add("Add", [v, step.inputs[0]])
        fired = e.add("GreaterOrEqual", [u, threshold])
        zero = e.const(np.int32(0))
        e.membranes[key] = (e.add("Sub", [u, e.add("Where", [fired, threshold, zero])])
                            if p.subtract else e.add("Where", [fired, zero, u]))
        amplitude = e.once(f"{key}/amplitude", lambda: p.amplitude)
        e.add("Where", [fired, amplitude, e.const(np.int8(0))])
        return
    ins = [e.float_in(n) for n in step.inputs]
    x, threshold = ins[0], ins[1]
    v = e.membranes.get(key) or (ins[2] if len(ins) > 2 else e.const(
        np.zeros(e.graph.tensors[key].shape, np.float32)))
    if node.op == "lif_neuron":
        v = e.add("Mul", [v, e.const(np.float32(node.attrs["leak"]))])
    u = e.add("Add", [v, x])
    spikes = e.add("Cast", [e.add("GreaterOrEqual", [u, threshold])], to=TensorProto.FLOAT)
    out = e.add("Mul", [spikes, threshold])
    e.membranes[key] = (e.add("Sub", [u, out]) if node.attrs["reset"] == "subtract" else
                        e.add("Mul", [u, e.add("Sub", [e.const(np.float32(1)), spikes])]))
    e.add("Identity", [out])


def _c(w, i, node):
    """The firmware's neuron step, the runtime's twin: the membrane a static array reset to its
    initial value at the start of every inference."""
    shape = w.shape(node.outputs[0])[1:]
    n, x, y = w.size(node.outputs[0]), w.at(node.inputs[0]), w.at(node.outputs[0])
    if w.int8:
        p = _params(w.graph, node)
        v = w.membrane(i, n, p.v_init, "int32_t")
        return (f"ek_neuron_step_s32({n}, {x}, {w.const(f'th{i}', p.threshold, 'int32_t')}, "
                f"{v}, {p.leak}, {int(p.subtract)}, "
                f"{w.const(f'a{i}', np.broadcast_to(p.amplitude, shape), 'int8_t')}, {y})")
    params = w.graph.params
    v_init = params[node.inputs[2]] if len(node.inputs) > 2 else np.zeros(shape)
    v = w.membrane(i, n, v_init, "float")
    return (f"ek_neuron_step_f32({n}, {x}, {w.const(f'th{i}', params[node.inputs[1]])}, {v}, "
            f"{w.float_literal(node.attrs.get('leak', 1.0))}, "
            f"{int(node.attrs['reset'] == 'subtract')}, {y})")


def _gpu(v, x, threshold, v_init=None, *, reset, leak=1.0):
    """One step on torch tensors from membrane ``v`` (None at the first step): the output
    (spikes times thresholds) and the membrane after it."""
    v = (v_init if v_init is not None else 0.0) if v is None else v
    u = leak * v + x
    spikes = (u >= threshold).to(u.dtype)
    out = spikes * threshold
    return out, u - out if reset == "subtract" else u * (1 - spikes)


for _op in (if_neuron, lif_neuron):
    _op.implements("spiking")(_float_step)
    _op.implements("spiking_int8", quant=True)(_int8_step)
    _op.implements("quant_spiking")(_quantize)
    _op.implements("onnx_spiking")(_onnx)
    _op.implements("c_spiking")(_c)
    _op.implements("gpu", state=True)(_gpu)
    for _backend, _why in _REASONS.items():
        _op.unsupported(_backend, _why)
