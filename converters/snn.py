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

Both stream the calibration data in batches that a memory budget sets (``calibration_plan``):
the thresholds need running maxima or the top order statistics, and FAS per layer sums each
pair's error over the batches, so memory is bounded by the budget and not by the data set.
The converted SNN is then checked against the ANN (``conversion_check``), with a
``SpikingConversionWarning`` when it falls short.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from numba import njit

from edgekit.errors import EdgekitError
from edgekit.graph import Graph, Node, TensorInfo
from edgekit.limits import DEFAULT_LIMITS
from edgekit.ops import implementation
from edgekit.runtime import Executor
from edgekit.runtime.planner import NaivePlanner
from edgekit.runtime.spiking import SpikingExecutor
from edgekit.spiking import ENCODINGS, OUTPUTS, is_spiking

BALANCINGS = ("max", "p99.9", "trained")
_RELUS = ("relu", "relu6")
_THRESHOLD_GRID = np.arange(0.3, 1.51, 0.05)
_V_INIT_GRID = np.arange(0.0, 1.01, 0.125)
_GRID = np.zeros((len(_THRESHOLD_GRID), len(_V_INIT_GRID)))  # FAS's errors of one neuron
_NEURONS = ("if_neuron", "lif_neuron")
DEFAULT_MEMORY_BUDGET = 2 * 2**30  # bytes; the README's 2 GB
CHECK_SAMPLES = 256  # calibration samples the converted SNN is checked on
AGREEMENT_TOLERANCE = 0.05  # "a few points" below the ANN: SpikingConversionWarning


def to_snn(graph: Graph, calibration: np.ndarray, timesteps: int = 8, *,
           balancing: str | float = "max", neuron: str = "if", leak: float = 0.9,
           reset: str = "subtract", v_init: float = 0.0, encoding: str = "direct",
           output: str = "membrane", calibrate: str | None = None,
           labels: np.ndarray | None = None, memory_budget: int = DEFAULT_MEMORY_BUDGET,
           check: int = CHECK_SAMPLES,
           progress: Callable[[Iterable[int]], Iterable[int]] = iter) -> Graph:
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

    The calibration data streams through in batches that ``memory_budget`` (bytes of working
    memory: arenas, traces and statistics, not the data or the weights) sets
    (``calibration_plan``); a budget too small for one sample is an ``EdgekitError``. Under
    rate encoding the input spikes are drawn per batch, so the batch changes the draws.
    ``progress`` wraps the ``range`` of work units (batches of each pass), as
    ``learn.finetune``'s does. Then the SNN runs on the last ``check`` calibration samples
    (0: no check) against the ANN: top-1 agreement for a classifier (and both accuracies
    given ``labels``, one class per calibration sample), else the relative error of the
    output; ``metadata["conversion_check"]`` holds the figures, and a
    ``SpikingConversionWarning`` says what to try when they fall more than
    ``AGREEMENT_TOLERANCE`` short. The samples are not held out: thresholds are per-layer
    statistics (FAS: one pair per neuron from a 225-point grid), too few to fit them.
    """
    _check_options(graph, timesteps, balancing, neuron, reset, encoding, output, calibrate,
                   v_init, leak)
    calibration = np.asarray(calibration, np.float32)
    if len(graph.inputs) != 1 or calibration.ndim == 0 or len(calibration) == 0:
        raise EdgekitError("to_snn needs a Graph with one input and at least one calibration "
                           "sample")
    if type(check) is not int or check < 0:
        raise EdgekitError(f"check is a number of samples (0: none), got {check!r}")
    if labels is not None and len(labels) != len(calibration):
        raise EdgekitError(f"{len(labels)} labels for {len(calibration)} calibration samples")
    snn, neurons = _spiking_structure(graph, timesteps, neuron, leak, reset, encoding, output)
    trained = balancing == "trained"
    fixed = {n.tensor: _trained(graph, n.tensor) for n in neurons
             if trained and n.output is None}
    stats = [n for n in neurons if n.tensor not in fixed]
    plan = calibration_plan(graph, snn, len(calibration), memory_budget,
                            calibrate == "fas", trained)
    checked = min(check, len(calibration))
    units = ((len(plan.batches) if stats else 0) + len(plan.layers) * len(plan.batches)
             * (calibrate == "fas") + len(_batches(checked, plan.batch)))
    ticks = iter(progress(range(units)))
    next(ticks, None)  # the generator draws after each unit, and closes after the last

    def tick() -> None:
        next(ticks, None)

    scales = _scales(graph, calibration, [n.tensor for n in stats], balancing, plan.batch,
                     trained, tick) if stats else {}
    for n in neurons:
        scale = min(fixed[n.tensor] if n.tensor in fixed else
                    _scale_of(scales[n.tensor], "max" if trained else balancing), n.cap)
        snn.params[f"{n.tensor}.threshold"][...] = scale
        snn.params[f"{n.tensor}.v_init"][...] = v_init * scale
    if calibrate == "fas":
        fas_calibrate(snn, graph, calibration, trained=trained, plan=plan, tick=tick)
    if checked:
        report = conversion_check(graph, snn, calibration[-checked:],
                                  None if labels is None else labels[-checked:], plan.batch,
                                  tick)
        snn.metadata["conversion_check"] = report
        advice = check_advice(report, timesteps, calibrate, trained)
        if advice:
            warnings.warn(advice, SpikingConversionWarning, stacklevel=2)
    return snn


class SpikingConversionWarning(UserWarning):
    """The converted SNN falls short of its ANN on the calibration data (``to_snn``)."""


@dataclass(frozen=True)
class _Neuron:
    tensor: str  # the ANN activation (or output) the neuron's rate stands for
    cap: float
    output: int | None  # the graph output a spike-count output neuron stands for


def _spiking_structure(graph: Graph, timesteps: int, neuron: str, leak: float, reset: str,
                       encoding: str, output: str) -> tuple[Graph, list[_Neuron]]:
    """The spiking Graph with every threshold 1 and initial membrane 0 (``to_snn`` sets them
    from calibration), and its neurons in node order."""
    snn = Graph(list(graph.inputs), list(graph.outputs), dict(graph.tensors), [],
                dict(graph.params), {**copy.deepcopy(graph.metadata), "timesteps": timesteps,
                                     "encoding": encoding, "snn_output": output})
    op, attrs = ("if_neuron", {"reset": reset}) if neuron == "if" else \
        ("lif_neuron", {"reset": reset, "leak": float(leak)})
    neurons = []

    def add_neuron(x: str, out: str, cap: float, name: str, output: int | None = None) -> None:
        shape = graph.tensors[out].shape[1:]
        inputs = [x]
        for suffix, value in (("threshold", 1.0), ("v_init", 0.0)):
            param = f"{out}.{suffix}"
            snn.params[param] = np.full(shape, value, np.float32)
            snn.tensors[param] = TensorInfo(shape)
            inputs.append(param)
        snn.nodes.append(Node(op, inputs, [out], dict(attrs), name))
        neurons.append(_Neuron(out, cap, output))

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
            add_neuron(z, name, np.inf, f"output {i}", i)
    snn.validate()
    return snn, neurons


# --------------------------------------------------------------------------- memory budget


@dataclass
class CalibrationPlan:
    """How ``to_snn`` streams ``samples`` calibration samples: ``batch`` at a time, and per
    FAS layer (each neuron, in node order) the executors of the sub-Graphs that feed it."""

    samples: int
    batch: int
    per_sample: int  # bytes one more sample in a batch costs, at the costliest pass
    fixed: int  # bytes every batch costs regardless of its size (FAS's error grid)
    layers: list[tuple[Node, SpikingExecutor, Executor | None]]  # neuron, its input, target

    @property
    def batches(self) -> list[tuple[int, int]]:
        return _batches(self.samples, self.batch)


def calibration_plan(ann: Graph, snn: Graph, samples: int, memory_budget: int,
                     fas: bool = False, trained: bool = False) -> CalibrationPlan:
    """The largest batch (at most ``samples``) whose working memory fits ``memory_budget``
    bytes in every pass of ``to_snn``: the ANN's activations for the thresholds, per FAS
    layer the spiking sub-Graph that feeds it with its input currents over the T steps, the
    ANN sub-Graph of its target and the error grid, and the ANN and SNN side by side for the
    check. Each arena's size is linear in the batch (measured at batches 1 and 2)."""
    if not (isinstance(memory_budget, (int, float)) and memory_budget > 0):
        raise EdgekitError(f"memory_budget must be a positive number of bytes, got "
                           f"{memory_budget!r}")
    steps = snn.metadata["timesteps"]
    ann_ex, snn_ex = Executor(ann), SpikingExecutor(snn)
    costs = [("the ANN's activations",
              *_linear(lambda b: ann_ex.program(b, NaivePlanner()).plan.size)),
             ("the ANN and SNN outputs",
              *_linear(lambda b: ann_ex.program(b).plan.size + snn_ex.program(b).plan.size))]
    layers = []
    for node in snn.nodes if fas else ():
        if node.op not in _NEURONS:
            continue
        sub = SpikingExecutor(_subgraph(snn, node.inputs[0]))
        target = None if trained else Executor(_subgraph(ann, node.outputs[0]))
        layers.append((node, sub, target))
        fixed, per = _linear(lambda b, sub=sub, target=target: sub.program(b).plan.size + (
            (target or ann_ex).program(b, None if target else NaivePlanner()).plan.size))
        for ex in (sub, target) if target else (sub,):
            ex.release()  # built again, at the batch chosen, when its layer's turn comes
        neurons = math.prod(snn.tensors[node.inputs[0]].shape[1:])
        # the error grid; the currents over the T steps, the target and its copy per sample
        costs.append((f"FAS layer {node.name!r}", fixed + neurons * _GRID.nbytes,
                      per + neurons * 4 * (steps + 2)))
    fixed = max(c[1] for c in costs)
    per_sample = max(c[2] for c in costs)
    batch = min(samples, int((memory_budget - fixed) // per_sample))
    if batch < 1:
        what = max(costs, key=lambda c: c[1] + c[2])[0]
        raise EdgekitError(f"a memory budget of {_mib(memory_budget)} cannot hold one "
                           f"calibration sample: {what} needs {_mib(fixed + per_sample)}; "
                           "raise memory_budget (convert --memory-budget)")
    return CalibrationPlan(samples, batch, per_sample, fixed, layers)


def _linear(size: Callable[[int], int]) -> tuple[int, int]:
    """(fixed, per sample) bytes of an arena whose size is ``size(batch)``."""
    one, two = size(1), size(2)
    return max(2 * one - two, 0), max(two - one, 1)


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.1f} MiB"


def _batches(samples: int, batch: int) -> list[tuple[int, int]]:
    return [(start, min(start + batch, samples)) for start in range(0, samples, batch)]


def _padded(x: np.ndarray, batch: int) -> np.ndarray:
    """``x`` with zero rows up to ``batch``: every batch runs on one program (one arena)."""
    if len(x) == batch:
        return x
    return np.concatenate([x, np.zeros((batch - len(x), *x.shape[1:]), x.dtype)])


def _subgraph(graph: Graph, output: str) -> Graph:
    """The nodes of ``graph`` that ``output`` depends on, as a Graph with that one output."""
    need, nodes = {output}, []
    for node in reversed(graph.nodes):
        if node.outputs[0] in need:
            nodes.append(node)
            need.update(node.inputs)
    nodes.reverse()
    names = {n for node in nodes for n in (*node.inputs, *node.outputs)}
    return Graph([x for x in graph.inputs if x in need], [output],
                 {n: graph.tensors[n] for n in names | set(graph.inputs) & need}, nodes,
                 {n: graph.params[n] for n in names if n in graph.params},
                 dict(graph.metadata))


# --------------------------------------------------------------------------- thresholds


def _scales(graph: Graph, x: np.ndarray, tensors: list[str], balancing: str | float,
            batch: int, trained: bool, tick: Callable[[], None]
            ) -> dict[str, tuple[np.ndarray, int]]:
    """Per tensor, what its threshold is balanced from (``_scale_of``), streamed over batches,
    and its number of values over the set: the running max, or for "p99.9" the largest values
    that the 99.9th percentile can fall between (a tenth of a percent of them and one more),
    so that the streamed percentile is the one over the whole set."""
    counts = {name: len(x) * math.prod(graph.tensors[name].shape[1:]) for name in tensors}
    kept: dict[str, np.ndarray] = {}
    ex = None if trained else Executor(graph)
    for start, stop in _batches(len(x), batch):
        xb = _padded(x[start:stop], batch)
        acts = _trained_activations(graph, xb) if trained else ex.run_layers(xb)
        for name in tensors:
            values = acts[name][:stop - start].reshape(-1)
            if name in kept:
                values = np.concatenate([kept[name], values])
            keep = counts[name] - math.floor((counts[name] - 1) * (99.9 / 100)) \
                if balancing == "p99.9" else 1
            if len(values) > keep:
                values = np.partition(values, len(values) - keep)[-keep:]
            kept[name] = values
        del acts
        tick()
    return {name: (values, counts[name]) for name, values in kept.items()}


def _scale_of(kept: tuple[np.ndarray, int], balancing: str | float) -> float:
    """The layer scale from ``_scales``' values of a tensor with ``n`` values in all."""
    values, n = kept
    peak = float(values.max())
    if balancing == "max":
        scale = peak
    elif balancing == "p99.9":  # numpy's linear percentile from the top order statistics,
        position = (n - 1) * (99.9 / 100)  # in float32 as numpy (equal to it within 1 ulp)
        low = math.floor(position)
        top = np.sort(values)[low - (n - len(values)):]
        a, b, t = top[0], top[min(1, len(top) - 1)], np.float32(position - low)
        scale = float(a + (b - a) * t if t < 0.5 else b - (b - a) * (np.float32(1) - t))
    else:
        scale = float(balancing) * peak
    return scale if scale > 0 else 1.0


# --------------------------------------------------------------------------- FAS


def fas_calibrate(snn: Graph, ann: Graph, calibration: np.ndarray, *, trained: bool = False,
                  memory_budget: int = DEFAULT_MEMORY_BUDGET,
                  plan: CalibrationPlan | None = None,
                  tick: Callable[[], None] = lambda: None) -> Graph:
    """Tune each neuron's threshold and initial membrane, layer by layer from the input, to
    match the activations of ``ann`` (QCFS-clipped and rounded with ``trained``) on
    ``calibration``, streamed in the batches of ``plan`` (``calibration_plan`` of
    ``memory_budget``). In place.

    Per layer, each batch runs the spiking sub-Graph up to the neuron's input (the layers
    below already calibrated) and the ANN up to its output, and adds the batch's squared
    errors of every grid pair to the layer's error grid; the grid's minimum after the last
    batch is the pair. The errors add up sample by sample in the same order whatever the
    batch, so streaming changes only what batch-size-dependent rounding of the kernels does
    to the currents (none where they compute each sample alone)."""
    plan = plan or calibration_plan(ann, snn, len(calibration), memory_budget, True, trained)
    steps = snn.metadata["timesteps"]
    t_scales, v_fracs = _THRESHOLD_GRID.astype(np.float32), _V_INIT_GRID.astype(np.float32)
    for node, sub, target in plan.layers:
        threshold, v_init = snn.params[node.inputs[1]], snn.params[node.inputs[2]]
        base = threshold.reshape(-1).astype(np.float32)
        errors = np.zeros((len(base), len(t_scales), len(v_fracs)))
        z = np.empty((steps, plan.batch, *snn.tensors[node.inputs[0]].shape[1:]), np.float32)
        for start, stop in plan.batches:
            xb = _padded(calibration[start:stop], plan.batch)
            sub.trace(xb, z)
            want = (_trained_activations(ann, xb, node.outputs[0])[node.outputs[0]] if trained
                    else target.run(xb))
            n = stop - start
            _grid_errors(z[:, :n].reshape(steps, n, -1), want[:n].reshape(n, -1), base,
                         np.float32(node.attrs.get("leak", 1.0)),
                         node.attrs["reset"] == "subtract", t_scales, v_fracs, errors)
            tick()
        t_best, v_best = _grid_pick(errors, base, t_scales, v_fracs)
        threshold.reshape(-1)[:] = t_best
        v_init.reshape(-1)[:] = v_best
        for ex in (sub, target) if target else (sub,):
            ex.release()  # one layer's arenas at a time
    return snn


@njit(cache=True)
def _grid_errors(z, target, base, leak, subtract, t_scales, v_fracs, errors):
    """Add to ``errors[k, i, j]``, sample by sample, the squared error of neuron k's output
    averaged over the T steps of ``z`` (T, N, K) against ``target`` (N, K) with threshold
    ``base[k] * t_scales[i]`` and initial membrane ``v_fracs[j]`` of it.

    The grid's pairs are the lanes of one inner loop over a neuron's T steps (branch-free, so
    it vectorizes): ten times faster than a loop per pair, and the same float64 operations
    in the same order, so the same errors to the bit."""
    steps, samples, neurons = z.shape
    nv = len(v_fracs)
    lanes = len(t_scales) * nv
    zk = np.empty((samples, steps))
    theta, v0 = np.empty(lanes), np.empty(lanes)
    v, spikes = np.empty(lanes), np.empty(lanes)
    for k in range(neurons):
        for n in range(samples):
            for t in range(steps):
                zk[n, t] = z[t, n, k]
        for i in range(len(t_scales)):
            th = base[k] * t_scales[i]  # float32, as the pair it stands for
            for j in range(nv):
                theta[i * nv + j] = th
                v0[i * nv + j] = v_fracs[j] * th
        err = errors[k].reshape(lanes)
        for n in range(samples):
            v[:] = v0
            spikes[:] = 0.0
            for t in range(steps):
                current = zk[n, t]
                for m in range(lanes):
                    x = leak * v[m] + current
                    fire = x >= theta[m]
                    spikes[m] += fire
                    v[m] = x - theta[m] * fire if subtract else x * (1.0 - fire)
            for m in range(lanes):
                err[m] += (spikes[m] * theta[m] / steps - target[n, k]) ** 2


@njit(cache=True)
def _grid_pick(errors, base, t_scales, v_fracs):
    """Per neuron, the first (threshold, initial membrane) pair of least error."""
    t_best, v_best = base.copy(), np.zeros_like(base)
    for k in range(len(base)):
        best = np.inf
        for i, t_scale in enumerate(t_scales):
            theta = base[k] * t_scale
            for j, v_frac in enumerate(v_fracs):
                if errors[k, i, j] < best:
                    best, t_best[k], v_best[k] = errors[k, i, j], theta, v_frac * theta
    return t_best, v_best


# --------------------------------------------------------------------------- the check


def conversion_check(ann: Graph, snn: Graph, x: np.ndarray, labels: np.ndarray | None = None,
                     batch: int | None = None,
                     tick: Callable[[], None] = lambda: None) -> dict:
    """How the SNN compares with its ANN on ``x`` (run ``batch`` at a time): ``samples``,
    ``timesteps``, and for a classifier (a first output of several scores) ``agreement``,
    the share of samples whose top-1 class is the ANN's, with ``ann_accuracy`` and
    ``snn_accuracy`` given ``labels``; for any other output ``relative_error``, the norm of
    the difference over the ANN output's."""
    batch = batch or len(x)
    ann_ex, snn_ex = Executor(ann), SpikingExecutor(snn)
    ann_out, snn_out = [], []
    for start, stop in _batches(len(x), batch):
        xb = _padded(x[start:stop], batch)
        for ex, outs in ((ann_ex, ann_out), (snn_ex, snn_out)):
            y = ex.run(xb)
            outs.append((y[0] if isinstance(y, list) else y)[:stop - start])
        tick()
    a, s = np.concatenate(ann_out), np.concatenate(snn_out)
    report = {"samples": len(x), "timesteps": snn.metadata["timesteps"]}
    if a.ndim == 2 and a.shape[1] > 1:
        report["agreement"] = float(np.mean(a.argmax(1) == s.argmax(1)))
        if labels is not None:
            labels = np.asarray(labels).reshape(-1)
            report["ann_accuracy"] = float(np.mean(a.argmax(1) == labels))
            report["snn_accuracy"] = float(np.mean(s.argmax(1) == labels))
    else:
        report["relative_error"] = float(np.linalg.norm(s - a) / max(np.linalg.norm(a), 1e-30))
    return report


def check_summary(report: dict) -> str:
    """``conversion_check``'s figures in one line."""
    if "agreement" not in report:
        return (f"SNN output vs ANN on {report['samples']} calibration samples: relative "
                f"error {report['relative_error']:.3f}")
    line = (f"SNN vs ANN on {report['samples']} calibration samples: top-1 agreement "
            f"{report['agreement']:.1%}")
    if "snn_accuracy" in report:
        line += (f", accuracy {report['snn_accuracy']:.1%} (ANN "
                 f"{report['ann_accuracy']:.1%})")
    return line


def check_advice(report: dict, timesteps: int, calibrate: str | None,
                 trained: bool = False) -> str | None:
    """One line on what to try, when the SNN falls more than ``AGREEMENT_TOLERANCE`` short of
    its ANN (accuracy given labels, else top-1 agreement, else a relative error above it)."""
    if "snn_accuracy" in report:
        short = report["ann_accuracy"] - report["snn_accuracy"] > AGREEMENT_TOLERANCE
    elif "agreement" in report:
        short = report["agreement"] < 1 - AGREEMENT_TOLERANCE
    else:
        short = report["relative_error"] > AGREEMENT_TOLERANCE
    if not short:
        return None
    tries = [f"more time steps (T = {timesteps}; --timesteps {4 * timesteps})"]
    if calibrate != "fas":
        tries.append("FAS calibration (calibrate='fas', --calibrate fas)")
    if not trained:
        tries.append("QCFS fine-tuning of the ANN (converters.qcfs.qcfs_finetune, then "
                     "balancing='trained')")
    return f"the SNN falls short of its ANN ({check_summary(report)}); try " + \
        ", ".join(tries)


def _trained(graph: Graph, tensor: str) -> float:
    thresholds = graph.metadata.get("activation_thresholds", {})
    if tensor not in thresholds:
        raise EdgekitError(f"balancing='trained' needs a threshold for {tensor!r} in "
                           "graph.metadata['activation_thresholds']; build the Graph with "
                           "converters.qcfs.qcfs_graph from a qcfs_finetune'd net, or balance "
                           "by 'max' or 'p99.9'")
    return float(thresholds[tensor])


def _trained_activations(graph: Graph, x: np.ndarray, until: str | None = None
                         ) -> dict[str, np.ndarray]:
    """The QCFS-fine-tuned ANN's activations on ``x``: the Graph (plain ReLUs) run node by node,
    each output with a threshold clipped and, given its levels, rounded as QCFS does (only
    the nodes tensor ``until`` depends on, if given). On the residual ds_cnn these targets,
    not the plain ReLU's, are what make stage 2 help at T = 2-4."""
    thresholds = graph.metadata.get("activation_thresholds", {})
    levels = graph.metadata.get("activation_levels", {})
    acts = {graph.inputs[0]: x}
    for node in (graph if until is None else _subgraph(graph, until)).nodes:
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
