"""Running a spiking Graph: the time loop around the ordinary executor, neuron state, and
event-driven synapses.

A spiking Graph (``edgekit.spiking``: ``metadata["timesteps"]`` T, ``["encoding"]`` and
``["snn_output"]``) is an ordinary Graph with ``if_neuron``/``lif_neuron`` nodes. The design is
the simplest one that reuses everything: ``SpikingExecutor`` is an ``Executor`` whose program is
planned and bound once, then run T times per inference, by the Graph's schedule
(``edgekit.spiking.schedule``, which the C and ONNX writers and the profiler follow too). Neuron
state lives in each neuron step (``NeuronStep``: allocated in prepare, reset to the initial
membrane at the start of every inference), so the arena planner is untouched. Synapse layers
fed by spikes run event-driven kernels (``EventStep``, counting synaptic operations). Under
direct encoding the layers fed only by the analog input (the first layer) stay dense (their
MACs are what an SNN still multiplies) and, being the same at every step, run once per
inference; their outputs are held in the arena for the other T - 1 steps. The result is the
time average of the output tensor: the output layer's membrane divided by T, or the spike count
times the threshold over T.

Each op's kernels are its module's (``edgekit.ops``): backend ``spiking`` for float32 spiking
Graphs, ``spiking_int8`` for int8 ones (``edgekit.quant.spiking``), which run on the same plan
with integer kernels: the event-driven layers are the float ones (numba compiles them for int8
and int32 inputs, summing into int32), the first layer is the event kernel on its input less
the zero point (``centred``: every element an event), neurons step int32 membranes and emit int8
amplitudes, pools are integer sums and residual adds scaled adds. Its outputs are int32 sums
over the T steps, divided and dequantized at the edge.
"""

from __future__ import annotations

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.numerics.params import zero_point
from edgekit.ops import implementation, missing
from edgekit.quant.edge import graph_feeds, graph_results, require_finite_outputs, time_average
from edgekit.runtime.executor import Executor, Inputs, Program
from edgekit.runtime.int8 import carve, scratch_bytes
from edgekit.runtime.kernels import int8_elementwise
from edgekit.runtime.planner import NaivePlanner, Planner
from edgekit.runtime.registry import Kernel, Step, bind, kernel, sequence
from edgekit.spiking import is_int8, is_spiking, schedule


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


class EventStep:
    """An event-driven synapse layer's step; ``count[0]`` sums its synaptic operations."""

    def __init__(self, kernel, *args):
        self.count = np.zeros(1, np.int64)
        self._step = bind(kernel, *args, self.count)

    def __call__(self) -> None:
        self._step()


def centred(event: Kernel) -> Kernel:
    """An int8 Graph's first layer, fed by the int8 input (time-invariant): the input less its
    zero point (int16 scratch), then the event kernel, to which every non-zero element is an
    event, as a dense layer computes it."""
    def scratch_nbytes(in_shapes, out_shape, **attrs) -> int:
        inner = event.scratch_nbytes(in_shapes, out_shape, **attrs) if event.scratch_nbytes else 0
        return scratch_bytes((tuple(in_shapes[0]), np.int16)) + inner

    def prepare(ins, out, *, quant, scratch, **attrs) -> Step:
        x = ins[0]
        (centred_x,) = carve(scratch, (x.shape, np.int16))
        if event.scratch_nbytes:
            attrs["scratch"] = scratch[scratch_bytes((x.shape, np.int16)):]
        layer = event.prepare([centred_x, *ins[1:]], out, **attrs)
        return sequence([(int8_elementwise.subtract, x.reshape(-1), zero_point(quant[0]),
                          centred_x.reshape(-1)), (layer,)])

    return Kernel(prepare, scratch_nbytes, "int8")


def executor_for(graph: Graph, planner: Planner | None = None) -> Executor:
    """The executor that runs ``graph``: a ``SpikingExecutor`` for a spiking Graph (its T time
    steps per inference), an ``Executor`` for every other."""
    return (SpikingExecutor if is_spiking(graph) else Executor)(graph, planner)


class SpikingExecutor(Executor):
    """Runs a spiking Graph for its T time steps per inference: ``SpikingExecutor(g).run(x)``.

    ``seed`` fixes the Bernoulli draws of rate encoding.
    """

    def __init__(self, graph: Graph, planner: Planner | None = None, seed: int = 0):
        if not is_spiking(graph.validate()):  # validation checked its kind (edgekit.spiking)
            raise EdgekitError("not a spiking Graph (no metadata timesteps): run it on Executor")
        self.timesteps = graph.metadata["timesteps"]
        self.encoding = graph.metadata.get("encoding", "direct")
        self.output = graph.metadata.get("snn_output", "membrane")
        self.int8 = is_int8(graph)
        self.rng = np.random.default_rng(seed)
        plan = schedule(graph)
        self.static, self.held, self.event_driven = plan.static, plan.held, plan.event_driven
        self._first_layer = plan.first_layer
        super().__init__(graph, planner)

    def _select_kernels(self, graph: Graph) -> list[Kernel]:
        """Per node, from the op registry: the float32 kernel where a float32 Graph's node runs
        once; else the spiking kernel of the Graph's kind (neurons' state, synapses' events, an
        int8 Graph's integer ops, or the float32 kernel of an op that computes the same on
        spikes), an int8 Graph's first layer on its centred input (``centred``)."""
        backend = "spiking_int8" if self.int8 else "spiking"
        missing({n.op for n, s in zip(graph.nodes, self.static, strict=True)
                 if self.int8 or not s}, backend,
                f"the {'int8 ' if self.int8 else ''}spiking runtime")
        kernels = []
        for node, static, first in zip(graph.nodes, self.static, self._first_layer, strict=True):
            impl = implementation(node.op, backend)
            if static and not self.int8:
                found = kernel(node.op, "float32")
            else:
                found = Kernel(impl.fn, impl.options.get("scratch"),
                               "int8" if impl.options.get("quant") else "float32")
            kernels.append(centred(found) if first and self.int8 else found)
        return kernels

    def run(self, inputs: Inputs, raw: bool = False, *,
            allow_nonfinite: bool = False) -> np.ndarray | list[np.ndarray]:
        """The time-averaged outputs for ``inputs`` (one array, or a list in output order).
        For an int8 Graph ``raw=True`` takes int8 inputs and gives the int32 sums over the T
        steps (``edgekit.quant.edge.time_average`` makes the floats). ``allow_nonfinite`` is
        as for ``Executor.run`` (inputs and outputs)."""
        feeds = graph_feeds(self.graph, inputs, raw, allow_nonfinite)
        program = self.program(next(iter(feeds.values())).shape[0])
        sums = [np.zeros(program.arrays[name].shape, np.int32 if self.int8 else np.float32)
                for name in self.graph.outputs]
        for _ in self._steps(program, feeds):
            for total, name in zip(sums, self.graph.outputs, strict=True):
                total += program.arrays[name]
        if self.int8:  # int32 sums over the steps; raw=False divides and dequantizes them
            outs = graph_results(self.graph, sums, raw)
        else:
            outs = [total / np.float32(self.timesteps) for total in sums]
            outs = outs[0] if len(outs) == 1 else outs
        return require_finite_outputs(self.graph.outputs, outs, allow_nonfinite)

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

    def trace(self, inputs: Inputs, out: np.ndarray | None = None) -> np.ndarray:
        """The Graph's (first) output at every step, (T, *shape), into ``out`` if given: what
        ``record`` gives for one tensor, on the memory-planned arena (an output's buffer
        lives to the end of each step) instead of one buffer per tensor, so that FAS
        calibration (``converters.snn``) holds one layer's currents, not the whole net's."""
        feeds = graph_feeds(self.graph, inputs, False, False)
        program = self.program(next(iter(feeds.values())).shape[0])
        value = program.arrays[self.graph.outputs[0]]
        if out is None:
            out = np.empty((self.timesteps, *value.shape), value.dtype)
        for t, _ in enumerate(self._steps(program, feeds)):
            out[t] = value
        return out

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

