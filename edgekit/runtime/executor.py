"""The executor: prepare a Graph once per batch size, then run it many times.

For a batch size N every activation (graph inputs and outputs included) and every kernel scratch
buffer gets a lifetime in steps; a planner places them in one arena, which is allocated as a
single uint8 array, and each node's kernel is bound to views of the tensor's dtype into it. ``run``
then only copies the inputs in, calls the steps and copies the outputs out, so the peak it reports
is the memory it really uses. One Executor runs one call at a time (its arenas are reused).

An int8 Graph (``docs/quantized-graph.md``) runs on the int8 kernels; its float inputs and
outputs are converted at the edge by ``edgekit.quant.edge``, as every Session converts them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.ops import OPS, implementations
from edgekit.quant.edge import dequantizer, graph_feeds, quantizer, require_finite_outputs
from edgekit.runtime.fused import Fuser, fuse_after_default
from edgekit.runtime.lowbit import kernel_for as packed_weight_kernel
from edgekit.runtime.planner import Buffer, GreedyPlanner, NaivePlanner, Plan, Planner
from edgekit.runtime.registry import Kernel, Step
from edgekit.runtime.registry import kernel as find_kernel
from edgekit.runtime.staged import Staged

Inputs = np.ndarray | dict[str, np.ndarray] | list[np.ndarray] | tuple[np.ndarray, ...]


@dataclass
class Program:
    """A Graph bound to one batch size: its memory plan, the arena, and the steps bound to it."""

    batch: int
    plan: Plan
    arena: np.ndarray
    arrays: dict[str, np.ndarray]  # params, and every activation as a view into ``arena``
    steps: list[Step]  # one per graph node, in order

    def run(self) -> None:
        for step in self.steps:
            step()


class Executor:
    """Runs a Graph on the numba kernels: ``Executor(graph).run(x)``."""

    # Activations whose buffers live to the last step, like the outputs: a spiking Graph's
    # time-invariant tensors, computed once and read at every time step.
    held: frozenset[str] = frozenset()

    def __init__(self, graph: Graph, planner: Planner | None = None):
        self.graph = graph.validate()
        self._kernels = self._select_kernels(graph)
        self.planner = planner or GreedyPlanner()
        self._programs: dict[tuple[int, Planner], Program] = {}
        self._edge = _Edge(graph)
        # ``run`` calls of one batch size after which its Program is compiled into one
        # function (``edgekit/runtime/fused.py``); None: never. $EDGEKIT_FUSE_AFTER, else 50
        self.fuse_after: int | None = fuse_after_default()
        self._fuser = Fuser(self)

    def _select_kernels(self, graph: Graph) -> list[Kernel]:
        """Each node's kernel; a subclass may bind others (the spiking executor does)."""
        return _kernels_for(graph)

    def program(self, batch: int = 1, planner: Planner | None = None) -> Program:
        """The graph prepared for ``batch`` (planned, allocated and bound once, then cached)."""
        if type(batch) is not int or batch < 1:
            raise EdgekitError(f"batch size must be a positive int, got {batch!r}")
        key = (batch, planner or self.planner)
        if key not in self._programs:
            self._programs[key] = self._prepare(*key)
        return self._programs[key]

    def release(self) -> None:
        """Drop the prepared programs and their arenas (the next call prepares again): for a
        caller that holds many executors but runs one at a time (``converters.snn``)."""
        self._programs.clear()
        self._fuser.clear()

    def peak_activation_bytes(self, batch: int = 1) -> int:
        """Bytes of the arena that holds every activation and scratch buffer at this batch."""
        return self.program(batch).plan.size

    def run(self, inputs: Inputs, raw: bool = False, *,
            allow_nonfinite: bool = False) -> np.ndarray | list[np.ndarray]:
        """Outputs (copies) for ``inputs``: one array, or a list in the graph's output order.

        For an int8 Graph float inputs are quantized and outputs dequantized at the edge;
        ``raw=True`` exchanges the int8 tensors themselves. NaN or inf inputs are refused
        unless ``allow_nonfinite`` (float32 Graphs only; ``edgekit.quant.edge.graph_feeds``),
        and so are NaN or inf outputs (``require_finite_outputs``).
        """
        if type(inputs) is np.ndarray and not allow_nonfinite:
            fused = self._fuser.run(inputs, raw)
            if fused is not None:
                return fused
        program = self._load_array(inputs, raw) or self._load(inputs, raw, None, allow_nonfinite)
        program.run()
        return require_finite_outputs(self.graph.outputs, self._edge.results(program, raw),
                                      allow_nonfinite)

    def run_layers(self, inputs: Inputs, raw: bool = False, *,
                   allow_nonfinite: bool = False) -> dict[str, np.ndarray]:
        """Every node's output (copies, int8 in an int8 Graph), by tensor name: for parity
        checks layer by layer. ``raw`` and ``allow_nonfinite`` are as for ``run``."""
        program = self._load(inputs, raw, NaivePlanner(), allow_nonfinite)
        program.run()
        return {node.outputs[0]: program.arrays[node.outputs[0]].copy()
                for node in self.graph.nodes}

    def staged(self, inputs: Inputs, raw: bool = False) -> Staged:
        """A run that stops after the step producing the output asked for and goes on from there
        for a later one: ``staged(x).until(name)`` (``edgekit/runtime/staged.py``; early-exit
        Graphs stop at the exit a policy picks and never run the blocks past it)."""
        producer = {node.outputs[0]: i for i, node in enumerate(self.graph.nodes)
                    if node.outputs[0] in self.graph.outputs}
        return Staged(self.graph, self._load(inputs, raw), raw, producer)

    def feed(self, inputs: Inputs, raw: bool = False, planner: Planner | None = None,
             allow_nonfinite: bool = False) -> Program:
        """The program for the inputs' batch (and ``planner``) with the inputs in its arena, as
        ``run`` loads them: for a caller that runs its own choice of the program's steps
        (``edgekit.anytime.runtime``) and then reads ``results``."""
        return (self._load_array(inputs, raw, planner)
                or self._load(inputs, raw, planner, allow_nonfinite))

    def results(self, program: Program, raw: bool = False,
                allow_nonfinite: bool = False) -> np.ndarray | list[np.ndarray]:
        """The outputs of a program ``feed`` loaded and the caller ran, as ``run`` returns them."""
        return require_finite_outputs(self.graph.outputs, self._edge.results(program, raw),
                                      allow_nonfinite)

    def _load_array(self, x: Inputs, raw: bool,
                    planner: Planner | None = None) -> Program | None:
        """The common call, one array already in the edge's dtype, fed straight into the arena
        (quantized there for an int8 input); ``None`` for anything else — a NaN or inf
        included — which ``graph_feeds`` checks in full. Same values, a few µs less per call
        at batch 1."""
        edge = self._edge
        if type(x) is not np.ndarray or edge.single is None:
            return None
        name, info, quantize = edge.single
        if (x.dtype != (np.float32 if quantize and not raw else info.dtype)
                or x.ndim != len(info.shape) or x.shape[1:] != info.shape[1:] or x.shape[0] < 1
                or x.dtype.kind == "f" and not math.isfinite(np.vdot(x, x))):
            # x·x is finite only if every value is (squares cannot cancel): a NaN/inf screen
            # at half np.isfinite's cost; a finite x above 1e19 also fails it, and passes the
            # full check
            return None
        program = self.program(x.shape[0], planner)
        if quantize and not raw:
            quantize(x.reshape(-1), program.arrays[name].reshape(-1))
        else:
            np.copyto(program.arrays[name], x)
        return program

    def _load(self, inputs: Inputs, raw: bool, planner: Planner | None = None,
              allow_nonfinite: bool = False) -> Program:
        feeds = graph_feeds(self.graph, inputs, raw, allow_nonfinite)
        program = self.program(next(iter(feeds.values())).shape[0], planner)
        for name, x in feeds.items():
            np.copyto(program.arrays[name], x, casting="same_kind")
        return program

    def _prepare(self, batch: int, planner: Planner) -> Program:
        g = self.graph
        params = {name: np.ascontiguousarray(value) for name, value in g.params.items()}
        shapes = {name: (batch, *info.shape[1:]) for name, info in g.tensors.items()}
        shapes.update({name: value.shape for name, value in params.items()})
        buffers = _activation_buffers(g, shapes, self.held)
        n_activations = len(buffers)
        scratch_index = {}
        for i, (node, kernel) in enumerate(zip(g.nodes, self._kernels, strict=True)):
            if kernel.scratch_nbytes is not None:
                nbytes = kernel.scratch_nbytes([shapes[n] for n in node.inputs],
                                               shapes[node.outputs[0]], **node.attrs)
                scratch_index[i] = len(buffers)
                buffers.append(Buffer(f"scratch of node {i}", nbytes, i, i))
        plan = planner.plan(buffers)
        arena = np.zeros(plan.size, np.uint8)

        def view(k: int) -> np.ndarray:
            return arena[plan.offsets[k]:plan.offsets[k] + buffers[k].nbytes]

        arrays = dict(params)
        for k, buf in enumerate(buffers[:n_activations]):
            arrays[buf.name] = view(k).view(g.tensors[buf.name].dtype).reshape(shapes[buf.name])
        steps = []
        for i, (node, kernel) in enumerate(zip(g.nodes, self._kernels, strict=True)):
            extra = {"scratch": view(scratch_index[i])} if i in scratch_index else {}
            if kernel.dtype == "int8":
                extra["quant"] = [g.tensors[n].quant for n in (*node.inputs, node.outputs[0])]
            try:
                steps.append(kernel.prepare([arrays[n] for n in node.inputs],
                                            arrays[node.outputs[0]], **node.attrs, **extra))
            except EdgekitError as err:
                raise EdgekitError(f"node {i} ({node.op} {node.name!r}): {err}") from None
        return Program(batch, plan, arena, arrays, steps)


class _Edge:
    """``graph_feeds`` and ``graph_results`` with their per-tensor lookups done once: the
    quantizer of a lone graph input, the dequantizer of each int8 output."""

    def __init__(self, graph: Graph):
        self.single = None  # int32 indices take graph_feeds' path: their range is checked
        info = graph.tensors[graph.inputs[0]]
        if len(graph.inputs) == 1 and not (info.dtype == "int32" and info.quant is None):
            self.single = (graph.inputs[0], info,
                           quantizer(info.quant) if info.dtype == "int8" else None)
        self.outputs = [(name, dequantizer(graph.tensors[name].quant)
                         if graph.tensors[name].dtype == "int8" else None)
                        for name in graph.outputs]

    def results(self, program: Program, raw: bool) -> np.ndarray | list[np.ndarray]:
        """As ``graph_results`` of copies of the outputs: one array, or the list."""
        outs = [program.arrays[name].copy() if raw or dequantize is None
                else dequantize(program.arrays[name]) for name, dequantize in self.outputs]
        return outs[0] if len(outs) == 1 else outs


def execute(graph: Graph, inputs: Inputs) -> np.ndarray | list[np.ndarray]:
    """One-shot convenience: ``Executor(graph).run(inputs)``."""
    return Executor(graph).run(inputs)


def _kernels_for(graph: Graph) -> list[Kernel]:
    """The kernel of every node, keyed by op and input dtype; all missing ones in one error."""
    found, missing = [], []
    for i, node in enumerate(graph.nodes):
        dtype = graph.tensors[node.inputs[1 if OPS[node.op].indexed else 0]].dtype
        found.append(packed_weight_kernel(graph, node) or find_kernel(node.op, dtype))
        if found[-1] is None:
            missing.append(f"{node.op} on {dtype} (node {i} {node.name!r})")
    if missing:
        have = sorted(f"{op}/{dtype}" for dtype in ("float32", "int8")
                      for op in implementations(dtype))
        raise EdgekitError(f"the edgekit runtime has no kernel for {', '.join(missing)}; "
                           f"it has kernels for: {', '.join(have)}")
    return found


def _activation_buffers(graph: Graph, shapes: dict[str, tuple[int, ...]],
                        held: frozenset[str]) -> list[Buffer]:
    """Each activation with its bytes and the steps it is live in: graph inputs from step 0,
    graph outputs and ``held`` tensors to the last step, every other tensor from its producer
    to its last reader."""
    span = {name: [0, 0] for name in graph.inputs}
    for i, node in enumerate(graph.nodes):
        for name in node.inputs:
            if name in span:
                span[name][1] = i
        span[node.outputs[0]] = [i, i]
    for name in (*graph.outputs, *held):
        if name in span:
            span[name][1] = max(len(graph.nodes) - 1, 0)
    itemsize = {name: np.dtype(graph.tensors[name].dtype).itemsize for name in span}
    return [Buffer(name, math.prod(shapes[name]) * itemsize[name], first, last)
            for name, (first, last) in span.items()]
