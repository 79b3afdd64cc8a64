"""ANN → SNN conversion: a float Graph becomes a spiking Graph (Rueckauer et al. 2017, the
method of SpikingJelly's ``ann2snn``), with an optional FAS-style calibration.

Batch norm is already folded into the convolutions at import. Each ReLU (fused into its
producer, or standalone) becomes an integrate-and-fire neuron whose threshold is the layer's
scale lambda from calibration activations: the maximum, the 99.9th percentile, or a fraction of
the maximum. A neuron emits its threshold when it fires, so its rate times its threshold
approximates the ReLU's output and no weight needs rescaling; ReLU6 caps the threshold at 6.
``balancing="trained"`` takes the thresholds learned by QCFS fine-tuning (FAS stage 1,
``converters.qcfs``) from ``graph.metadata["activation_thresholds"]`` instead.
Max pooling becomes average pooling (a max over spike trains is not the max of the rates).

``calibrate="fas"`` then tunes, layer by layer, every neuron's threshold and initial membrane so
that its time-averaged output over T steps matches the ANN's activation on the calibration data
(the second stage of FAS, lc783/FAS). FAS trains them by gradient descent on that per-layer MSE;
here each neuron picks the best pair from a grid (threshold 0.3-1.5 lambda, initial membrane
0-1 of the threshold) by exact simulation of its own T steps on the inputs the already
calibrated layers below it produce, which needs neither torch nor surrogate gradients.
"""

from __future__ import annotations

import copy
import math

import numpy as np
from numba import njit

from edgekit.errors import EdgekitError
from edgekit.graph import Graph, Node, TensorInfo
from edgekit.limits import DEFAULT_LIMITS
from edgekit.ops import implementation
from edgekit.runtime import Executor
from edgekit.runtime.spiking import SpikingExecutor
from edgekit.spiking import ENCODINGS, OUTPUTS, is_spiking

BALANCINGS = ("max", "p99.9", "trained")
_RELUS = ("relu", "relu6")
_THRESHOLD_GRID = np.arange(0.3, 1.51, 0.05)
_V_INIT_GRID = np.arange(0.0, 1.01, 0.125)


def to_snn(graph: Graph, calibration: np.ndarray, timesteps: int = 8, *,
           balancing: str | float = "max", neuron: str = "if", leak: float = 0.9,
           reset: str = "subtract", v_init: float = 0.0, encoding: str = "direct",
           output: str = "membrane", calibrate: str | None = None) -> Graph:
    """The spiking Graph of ``graph`` for ``timesteps`` steps.

    ``balancing``: "max", "p99.9", a fraction of the max (a float in (0, 1]), or "trained":
    each threshold is ``graph.metadata["activation_thresholds"][tensor]``, the theta that
    ``converters.qcfs.qcfs_graph`` stores (a spike-count output layer, which QCFS does not
    train, balances by its max); pass ``v_init=0.5`` with it, the initial membrane that QCFS's
    shift of half a level stands for. ``calibrate="fas"`` then tunes from there towards the
    fine-tuned ANN's activations: each thresholded ReLU output clipped at theta and rounded
    to ``metadata["activation_levels"][tensor]`` levels as QCFS does. ``neuron``:
    "if" or "lif" (with ``leak``); ``reset``: "subtract" or "zero"; ``v_init``: the initial
    membrane as a fraction of the threshold; ``encoding``: "direct" (the analog input at every
    step) or "rate" (Bernoulli spikes, inputs in [0, 1]); ``output``: "membrane" (the output
    layer integrates, no spikes) or "spike_count"; ``calibrate``: None or "fas".
    """
    _check_options(graph, timesteps, balancing, neuron, reset, encoding, output, calibrate,
                   v_init, leak)
    calibration = np.asarray(calibration, np.float32)
    acts = (_trained_activations(graph, calibration) if balancing == "trained" else
            Executor(graph).run_layers(calibration))
    snn = Graph(list(graph.inputs), list(graph.outputs), dict(graph.tensors), [],
                dict(graph.params), {**copy.deepcopy(graph.metadata), "timesteps": timesteps,
                                     "encoding": encoding, "snn_output": output})
    op, attrs = ("if_neuron", {"reset": reset}) if neuron == "if" else \
        ("lif_neuron", {"reset": reset, "leak": float(leak)})

    def add_neuron(x: str, out: str, cap: float, name: str, balancing=balancing) -> None:
        scale = min(_trained(graph, out) if balancing == "trained" else
                    _balance(acts[out], balancing), cap)
        shape = graph.tensors[out].shape[1:]
        inputs = [x]
        for suffix, value in (("threshold", scale), ("v_init", v_init * scale)):
            param = f"{out}.{suffix}"
            snn.params[param] = np.full(shape, value, np.float32)
            snn.tensors[param] = TensorInfo(shape)
            inputs.append(param)
        snn.nodes.append(Node(op, inputs, [out], dict(attrs), name))

    for node in graph.nodes:
        node = copy.deepcopy(node)
        act = node.attrs.get("activation", "none")
        if node.op in _RELUS:
            add_neuron(node.inputs[0], node.outputs[0], 6.0 if node.op == "relu6" else np.inf,
                       node.name)
        elif node.op == "maxpool2d":
            if node.attrs["dilation"] != [1, 1]:
                raise EdgekitError(f"{node.name}: a dilated max pool has no spiking equivalent")
            snn.nodes.append(Node("avgpool2d", node.inputs, node.outputs,
                                  {k: node.attrs[k] for k in ("kernel", "stride", "padding")},
                                  node.name))
        elif act in _RELUS:
            out = node.outputs[0]
            z = f"{out}.z"
            snn.tensors[z] = graph.tensors[out]
            node.attrs["activation"], node.outputs = "none", [z]
            snn.nodes.append(node)
            add_neuron(z, out, 6.0 if act == "relu6" else np.inf, node.name)
        elif implementation(node.op, "spiking") is None:  # leaky_relu, softmax, sigmoid, ...
            raise EdgekitError(f"{node.op} ({node.name}) has no rate-coded spiking equivalent; "
                               "convert models built from conv, linear, ReLU, pools and add")
        else:
            snn.nodes.append(node)
    if output == "spike_count":
        for i, name in enumerate(snn.outputs):
            z = f"{name}.z"
            snn.tensors[z] = graph.tensors[name]
            for node in snn.nodes:
                node.outputs = [z if o == name else o for o in node.outputs]
                node.inputs = [z if x == name else x for x in node.inputs]
            add_neuron(z, name, np.inf, f"output {i}",
                       "max" if balancing == "trained" else balancing)
    snn.validate()
    if calibrate == "fas":
        fas_calibrate(snn, acts, calibration)
    return snn


def fas_calibrate(snn: Graph, ann_acts: dict[str, np.ndarray], calibration: np.ndarray) -> Graph:
    """Tune each neuron's threshold and initial membrane, layer by layer from the input, to
    match the ANN activations ``ann_acts`` (by tensor name) on ``calibration``. In place."""
    for node in snn.nodes:
        if node.op not in ("if_neuron", "lif_neuron"):
            continue
        traces, _ = SpikingExecutor(snn).record(calibration)
        z = traces[node.inputs[0]].reshape(snn.metadata["timesteps"], len(calibration), -1)
        target = ann_acts[node.outputs[0]].reshape(len(calibration), -1)
        threshold, v_init = snn.params[node.inputs[1]], snn.params[node.inputs[2]]
        t_best, v_best = _grid_search(z, target, threshold.reshape(-1).astype(np.float32),
                                      np.float32(node.attrs.get("leak", 1.0)),
                                      node.attrs["reset"] == "subtract",
                                      _THRESHOLD_GRID.astype(np.float32),
                                      _V_INIT_GRID.astype(np.float32))
        threshold.reshape(-1)[:] = t_best
        v_init.reshape(-1)[:] = v_best
    return snn


@njit(cache=True)
def _grid_search(z, target, base, leak, subtract, t_scales, v_fracs):
    """Per neuron k, the (threshold, initial membrane) from the grid whose time-averaged output
    over the T steps of ``z`` (T, N, K) has the least squared error to ``target`` (N, K)."""
    steps, samples, neurons = z.shape
    t_best, v_best = base.copy(), np.zeros_like(base)
    for k in range(neurons):
        best = np.inf
        for t_scale in t_scales:
            theta = base[k] * t_scale
            for v_frac in v_fracs:
                err = 0.0
                for n in range(samples):
                    v, spikes = v_frac * theta, 0
                    for t in range(steps):
                        v = leak * v + z[t, n, k]
                        if v >= theta:
                            spikes += 1
                            v = v - theta if subtract else 0.0
                    err += (spikes * theta / steps - target[n, k]) ** 2
                if err < best:
                    best, t_best[k], v_best[k] = err, theta, v_frac * theta
    return t_best, v_best


def _balance(values: np.ndarray, balancing: str | float) -> float:
    peak = float(values.max())
    if balancing == "max":
        scale = peak
    elif balancing == "p99.9":
        scale = float(np.percentile(values, 99.9))
    else:
        scale = float(balancing) * peak
    return scale if scale > 0 else 1.0


def _trained(graph: Graph, tensor: str) -> float:
    thresholds = graph.metadata.get("activation_thresholds", {})
    if tensor not in thresholds:
        raise EdgekitError(f"balancing='trained' needs a threshold for {tensor!r} in "
                           "graph.metadata['activation_thresholds']; build the Graph with "
                           "converters.qcfs.qcfs_graph from a qcfs_finetune'd net, or balance "
                           "by 'max' or 'p99.9'")
    return float(thresholds[tensor])


def _trained_activations(graph: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """The QCFS-fine-tuned ANN's activations on ``x``: the Graph (plain ReLUs) run node by node,
    each output with a threshold clipped and, given its levels, rounded as QCFS does. On the
    residual ds_cnn these targets, not the plain ReLU's, are what make stage 2 help at T = 2-4."""
    thresholds = graph.metadata.get("activation_thresholds", {})
    levels = graph.metadata.get("activation_levels", {})
    acts = {graph.inputs[0]: x}
    for node in graph.nodes:
        feeds = list(dict.fromkeys(i for i in node.inputs if i not in graph.params))
        single = Graph(feeds, list(node.outputs),
                       {n: graph.tensors[n] for n in (*node.inputs, *node.outputs)}, [node],
                       {n: graph.params[n] for n in node.inputs if n in graph.params})
        out = node.outputs[0]
        y = Executor(single).run({n: acts[n] for n in feeds})
        if out in thresholds:
            theta, steps = thresholds[out], levels.get(out)
            y = np.clip(y / theta, 0, 1)
            y = theta * (np.floor(y * steps + 0.5) / steps if steps else y)
        acts[out] = y.astype(np.float32)
    return acts


def _check_options(graph, timesteps, balancing, neuron, reset, encoding, output, calibrate,
                   v_init, leak):
    if type(timesteps) is not int or timesteps < 1:
        raise EdgekitError(f"timesteps must be a positive int, got {timesteps!r}")
    if timesteps > DEFAULT_LIMITS.max_timesteps:  # a file edgekit.load would refuse
        raise EdgekitError(f"timesteps {timesteps:,} is above Limits.max_timesteps = "
                           f"{DEFAULT_LIMITS.max_timesteps:,}, the most a saved model may run")
    for what, value in (("v_init", v_init), ("leak", leak)):
        if not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise EdgekitError(f"{what} must be a finite number, got {value!r}")
    if not (balancing in BALANCINGS or (isinstance(balancing, float) and 0 < balancing <= 1)):
        raise EdgekitError(f"balancing must be one of {BALANCINGS} or a fraction of the max in "
                           f"(0, 1], got {balancing!r}")
    for what, value, allowed in (("neuron", neuron, ("if", "lif")),
                                 ("reset", reset, ("subtract", "zero")),
                                 ("encoding", encoding, ENCODINGS), ("output", output, OUTPUTS),
                                 ("calibrate", calibrate, (None, "fas"))):
        if value not in allowed:
            raise EdgekitError(f"{what} must be one of {allowed}, got {value!r}")
    if any(t.dtype != "float32" for t in graph.tensors.values()):
        raise EdgekitError("convert the float Graph to an SNN, not a quantized one")
    if is_spiking(graph):
        raise EdgekitError("this Graph is already spiking")
