"""Running a spiking Graph: the time loop around the ordinary executor, neuron state, and
event-driven synapses.

A spiking Graph (``converters.snn``) is an ordinary Graph with ``if_neuron``/``lif_neuron``
nodes and ``metadata["timesteps"]`` (T), ``["encoding"]`` ("direct" or "rate") and
``["snn_output"]`` ("membrane" or "spike_count"). The design is the simplest one that reuses
everything: ``SpikingExecutor`` is an ``Executor`` whose program is planned and bound once, then
run T times per inference. Neuron state lives in each neuron step (allocated in prepare, reset
to the initial membrane at the start of every inference), so the arena planner is untouched.
Convolutions and linear layers fed by spikes are bound to event-driven kernels instead of the
dense ones. Under direct encoding the layers fed only by the analog input (the first layer)
stay dense (their MACs are what an SNN still multiplies) and, being the same at every step, run
once per inference; their outputs are held in the arena for the other T - 1 steps. The result
is the time average of the output tensor: the output layer's membrane divided by T, or the
spike count times the threshold over T.

An int8 spiking Graph (``edgekit.quant.spiking``) runs on the same plan with integer kernels:
the event-driven layers are the float ones (numba compiles them for int8 and int32 inputs,
summing into int32), the first layer is the event kernel on its input less the zero point (every
element an event), neurons step int32 membranes and emit int8 amplitudes, average pools sum.
Its outputs are int32 sums over the T steps, divided and dequantized at the edge.
"""

from __future__ import annotations

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.numerics.params import zero_point as _zp
from edgekit.ops import NEURON_OPS
from edgekit.quant.edge import graph_feeds, graph_results, time_average
from edgekit.quant.spiking import add_multiplier, leak_multiplier, spike_amplitudes
from edgekit.runtime.executor import Executor, Inputs, Program
from edgekit.runtime.int8 import _aligned
from edgekit.runtime.kernels import int8_elementwise, int8_pool, spiking
from edgekit.runtime.planner import NaivePlanner, Planner
from edgekit.runtime.registry import Kernel, Step, bind, kernel, register, sequence

ENCODINGS = ("direct", "rate")
OUTPUTS = ("membrane", "spike_count")


class NeuronStep:
    """A neuron layer's step with its declared state: the membrane (of ``v_init``'s dtype),
    reset per inference. ``kernel`` is ``neuron_step`` or ``int_neuron_step``; ``extra`` its
    arguments after ``subtract``."""

    def __init__(self, kernel, x: np.ndarray, threshold: np.ndarray, v_init: np.ndarray, leak,
                 subtract: bool, out: np.ndarray, *extra):
        flat = (x.shape[0], -1)
        self.v_init = v_init.reshape(-1)
        self.v = np.zeros(x.shape, v_init.dtype).reshape(flat)
        self.out = out
        self._step = bind(kernel, x.reshape(flat), threshold.reshape(-1), self.v, leak,
                          subtract, *extra, out.reshape(flat))

    def reset(self) -> None:
        self.v[:] = self.v_init

    def __call__(self) -> None:
        self._step()


def _neuron(leaky: bool):
    def prepare(ins, out, *, reset, leak=1.0) -> Step:
        x, threshold = ins[0], ins[1]
        v_init = ins[2] if len(ins) > 2 else np.zeros_like(threshold)
        return NeuronStep(spiking.neuron_step, x, threshold, v_init,
                          np.float32(leak if leaky else 1.0), reset == "subtract", out)

    return prepare


register("if_neuron")(_neuron(False))
register("lif_neuron")(_neuron(True))


class EventStep:
    """An event-driven synapse layer's step; ``count[0]`` sums its synaptic operations."""

    def __init__(self, kernel, *args):
        self.count = np.zeros(1, np.int64)
        self._step = bind(kernel, *args, self.count)

    def __call__(self) -> None:
        self._step()


def _event_conv2d(ins, out, *, stride, padding, dilation, groups, activation, scratch) -> Step:
    x, w = ins[0], ins[1]
    if activation != "none":
        raise EdgekitError("an event-driven convolution takes no fused activation")
    bias = ins[2] if len(ins) > 2 else np.zeros(w.shape[0], out.dtype)
    rows, cols = (spiking.tap_targets(size, taps, *geometry) for size, taps, *geometry in
                  zip(x.shape[2:], w.shape[2:], stride, padding[:2], dilation, out.shape[2:]))
    return EventStep(spiking.event_conv2d, x, np.ascontiguousarray(w.transpose(1, 2, 3, 0)),
                     bias, rows, cols,
                     scratch.view(out.dtype).reshape(*out.shape[2:], out.shape[1]), out)


def _event_linear(ins, out, *, activation) -> Step:
    x, w = ins[0], ins[1]
    if activation != "none":
        raise EdgekitError("an event-driven linear layer takes no fused activation")
    bias = ins[2] if len(ins) > 2 else np.zeros(w.shape[0], out.dtype)
    return EventStep(spiking.event_linear, x.reshape(-1, x.shape[-1]), np.ascontiguousarray(w.T),
                     bias, out.reshape(-1, out.shape[-1]))


def _event_conv2d_scratch(in_shapes, out_shape, **attrs) -> int:
    """One sample's sums, channels last (``event_conv2d``'s ``acc``; float32 or int32)."""
    return 4 * int(np.prod(out_shape[1:]))


EVENT_KERNELS = {"conv2d": Kernel(_event_conv2d, _event_conv2d_scratch),
                 "linear": Kernel(_event_linear)}


# --- int8 spiking Graphs ---------------------------------------------------------------------

def _int_neuron(ins, out, *, reset, quant, leak=1.0) -> Step:
    x, threshold = ins[0], ins[1]
    v_init = ins[2] if len(ins) > 2 else np.zeros_like(threshold)
    return NeuronStep(spiking.int_neuron_step, x, threshold, v_init,
                      np.int64(leak_multiplier(leak)), reset == "subtract", out,
                      spike_amplitudes(threshold, quant[0], quant[-1]).reshape(-1))


def _centred(event: Kernel) -> Kernel:
    """An event-driven layer fed by the int8 input (the time-invariant first layer): the input
    less its zero point (int16 scratch), then the event kernel, to which every non-zero
    element is an event, as a dense layer computes it."""
    def scratch_nbytes(in_shapes, out_shape, **attrs) -> int:
        inner = event.scratch_nbytes(in_shapes, out_shape, **attrs) if event.scratch_nbytes else 0
        return _aligned(2 * int(np.prod(in_shapes[0]))) + inner

    def prepare(ins, out, *, quant, scratch, **attrs) -> Step:
        x = ins[0]
        centred = scratch[:2 * x.size].view(np.int16).reshape(x.shape)
        if event.scratch_nbytes:
            attrs["scratch"] = scratch[_aligned(2 * x.size):]
        layer = event.prepare([centred, *ins[1:]], out, **attrs)
        return sequence([(int8_elementwise.subtract, x.reshape(-1), _zp(quant[0]),
                          centred.reshape(-1)), (layer,)])

    return Kernel(prepare, scratch_nbytes, "int8")


def _sum_pool2d(ins, out, *, kernel, stride, padding, count_include_pad) -> Step:
    return bind(int8_pool.sum_pool2d, ins[0], tuple(kernel), tuple(stride), tuple(padding[:2]),
                out)


def _global_sum(ins, out) -> Step:
    x = ins[0]
    return bind(int8_pool.row_sums, x.reshape(x.shape[0] * x.shape[1], -1), out.reshape(-1))


def _scaled_add(ins, out, *, activation, quant) -> Step:
    spikes = 0 if ins[0].dtype == np.int8 else 1
    if ins[0].shape != ins[1].shape:
        raise EdgekitError(f"an int8 residual add needs operands of one shape, got "
                           f"{ins[0].shape} and {ins[1].shape}")
    m = add_multiplier(quant[spikes], quant[1 - spikes])
    return bind(spiking.scaled_add, ins[spikes].reshape(-1), np.int32(m),
                ins[1 - spikes].reshape(-1), out.reshape(-1))


INT8_KERNELS = {"if_neuron": Kernel(_int_neuron, dtype="int8"),
                "lif_neuron": Kernel(_int_neuron, dtype="int8"),
                "avgpool2d": Kernel(_sum_pool2d), "global_avgpool": Kernel(_global_sum),
                "add": Kernel(_scaled_add, dtype="int8"),
                "reshape": kernel("reshape", "float32")}


class SpikingExecutor(Executor):
    """Runs a spiking Graph for its T time steps per inference: ``SpikingExecutor(g).run(x)``.

    ``seed`` fixes the Bernoulli draws of rate encoding.
    """

    def __init__(self, graph: Graph, planner: Planner | None = None, seed: int = 0):
        meta = graph.metadata
        self.timesteps = meta.get("timesteps")
        self.encoding = meta.get("encoding", "direct")
        self.output = meta.get("snn_output", "membrane")
        if type(self.timesteps) is not int or self.timesteps < 1:
            raise EdgekitError(f"a spiking Graph needs metadata timesteps >= 1, "
                               f"got {self.timesteps!r}")
        if self.encoding not in ENCODINGS or self.output not in OUTPUTS:
            raise EdgekitError(f"encoding must be one of {ENCODINGS} and snn_output one of "
                               f"{OUTPUTS}, got {self.encoding!r}, {self.output!r}")
        self.int8 = meta.get("quantized") == "int8"
        if not self.int8 and any(t.dtype != "float32" for t in graph.tensors.values()):
            raise EdgekitError("a spiking Graph runs on float32 weights, or int8 ones made by "
                               "edgekit.quantize from the float spiking Graph")
        self.rng = np.random.default_rng(seed)
        self.static = _time_invariant(graph) if self.encoding == "direct" else \
            [False] * len(graph.nodes)
        once = set(graph.inputs) | {node.outputs[0] for node, static
                                    in zip(graph.nodes, self.static, strict=True) if static}
        self.held = frozenset(x for node, static in zip(graph.nodes, self.static, strict=True)
                              if not static for x in node.inputs if x in once)
        self.event_driven = [node.op in EVENT_KERNELS and not static
                             for node, static in zip(graph.nodes, self.static, strict=True)]
        super().__init__(graph, planner)

    def _select_kernels(self, graph: Graph) -> list[Kernel]:
        """Event-driven kernels for layers fed by spikes; an int8 Graph's integer kernels."""
        if self.int8:
            missing = sorted({n.op for n in graph.nodes} - set(EVENT_KERNELS) - set(INT8_KERNELS))
            if missing:
                raise EdgekitError(f"int8 spiking Graphs have no kernels for {missing}; make "
                                   "them with edgekit.quantize from a float spiking Graph")
            return [EVENT_KERNELS[node.op] if event else _centred(EVENT_KERNELS[node.op])
                    if node.op in EVENT_KERNELS else INT8_KERNELS[node.op]
                    for node, event in zip(graph.nodes, self.event_driven, strict=True)]
        return [EVENT_KERNELS[node.op] if event else kernel for node, kernel, event
                in zip(graph.nodes, super()._select_kernels(graph), self.event_driven,
                       strict=True)]

    def run(self, inputs: Inputs, raw: bool = False, *,
            allow_nonfinite: bool = False) -> np.ndarray | list[np.ndarray]:
        """The time-averaged outputs for ``inputs`` (one array, or a list in output order).
        For an int8 Graph ``raw=True`` takes int8 inputs and gives the int32 sums over the T
        steps (``edgekit.quant.edge.time_average`` makes the floats). ``allow_nonfinite`` is
        as for ``Executor.run``."""
        feeds = graph_feeds(self.graph, inputs, raw, allow_nonfinite)
        program = self.program(next(iter(feeds.values())).shape[0])
        sums = [np.zeros(program.arrays[name].shape, np.int32 if self.int8 else np.float32)
                for name in self.graph.outputs]
        for _ in self._steps(program, feeds):
            for total, name in zip(sums, self.graph.outputs, strict=True):
                total += program.arrays[name]
        if self.int8:  # int32 sums over the steps; raw=False divides and dequantizes them
            return graph_results(self.graph, sums, raw)
        outs = [total / np.float32(self.timesteps) for total in sums]
        return outs[0] if len(outs) == 1 else outs

    def run_layers(self, inputs: Inputs, raw: bool = False, *,
                   allow_nonfinite: bool = False) -> dict[str, np.ndarray]:
        """Every node's output averaged over the T steps (rates times thresholds for neurons);
        for an int8 Graph in real units as ``run``'s outputs, or with ``raw=True`` (int8
        inputs) the integer sums over the steps."""
        traces = self.record(inputs, raw, allow_nonfinite=allow_nonfinite)[0]
        if not self.int8:
            return {name: trace.mean(axis=0) for name, trace in traces.items()}
        return {name: trace.sum(axis=0) if raw else
                time_average(trace.sum(axis=0), self.graph.tensors[name].quant, self.timesteps)
                for name, trace in traces.items()}

    def record(self, inputs: Inputs, raw: bool = False, *, allow_nonfinite: bool = False
               ) -> tuple[dict[str, np.ndarray], list[int]]:
        """Every node's output at every step, as (T, *shape) arrays by tensor name (integers
        for an int8 Graph, whose int8 inputs ``raw=True`` takes), and each node's synaptic
        operations over the inference (0 where not event-driven)."""
        feeds = graph_feeds(self.graph, inputs, raw, allow_nonfinite)
        program = self.program(next(iter(feeds.values())).shape[0], NaivePlanner())
        names = [node.outputs[0] for node in self.graph.nodes]
        traces = {name: [] for name in names}
        for _ in self._steps(program, feeds):
            for name in names:
                traces[name].append(program.arrays[name].copy())
        sops = [int(step.count[0]) if isinstance(step, EventStep) else 0
                for step in program.steps]
        return {name: np.stack(t) for name, t in traces.items()}, sops

    def _steps(self, program: Program, feeds: dict[str, np.ndarray]):
        """Reset the state, then run the T steps, yielding after each."""
        for step in program.steps:
            if isinstance(step, NeuronStep):
                step.reset()
            elif isinstance(step, EventStep):
                step.count[:] = 0
        dynamic = [step for step, static in zip(program.steps, self.static, strict=True)
                   if not static]
        for t in range(self.timesteps):
            if self.encoding == "rate":
                for name, x in feeds.items():
                    spikes = self.rng.random(x.shape, np.float32) < x
                    np.copyto(program.arrays[name], spikes, casting="unsafe")
            elif t == 0:
                for name, x in feeds.items():
                    np.copyto(program.arrays[name], x, casting="same_kind")
            for step in program.steps if t == 0 else dynamic:
                step()
            yield


def _time_invariant(graph: Graph) -> list[bool]:
    """Per node, whether its output is the same at every step under direct encoding: it reads
    only the inputs, params and such outputs, and is no neuron (a neuron has state). These
    run once per inference, at the first step; the rest of the network runs T times."""
    known = set(graph.inputs) | set(graph.params)
    static = []
    for node in graph.nodes:
        static.append(node.op not in NEURON_OPS and all(x in known for x in node.inputs))
        if static[-1]:
            known.add(node.outputs[0])
    return static

