"""A spiking Graph → ONNX with time unrolled: T copies of the network, the neurons' membranes
carried from each copy to the next, and the outputs averaged over the steps as the runtime does.

ONNX has no neuron state, but a fixed T unrolls exactly: step t's tensors are named
``name@t``, params and the (direct-encoded) input are shared by every step, and a neuron is
``U = leak·V + x``, ``S = Cast(U >= θ)``, ``out = S·θ``, then ``V = U − out`` (reset by
subtraction) or ``V = U·(1 − S)`` (to zero), starting from its initial membrane (the neuron's
``onnx_spiking`` implementation, ``edgekit/ops/neurons.py``). Every other op is written by its
``onnx`` visitor, as ``to_onnx`` writes it, so ONNX Runtime checks the event-driven runtime
against dense kernels written independently. Rate encoding draws random spikes inside the runtime;
its ONNX form would need the same draws as inputs, so it is not exported.

An int8 spiking Graph (``edgekit.quant.spiking``) unrolls to integers that ONNX Runtime
computes exactly as the runtime does: the model's input is the int8 tensor and its outputs the
int32 sums over the steps (the edge divides and dequantizes them, ``edge.time_average``).
Membranes, thresholds and spikes are int32/int8 tensors under Add, Sub, GreaterOrEqual and
Where; LIF's Q15 leak is an int64 Mul and Div (truncating, as the runtime's). ``linear`` is an
int32 MatMul. ONNX Runtime convolves only 8-bit integers, so a convolution (and the window sum
``sum_pool2d``, a convolution by ones) runs as a float32 Conv on tensors holding small
integers, cast back to int32: exact while every partial sum stays below 2^24, which each such
visitor proves as it writes (``SpikingEmitter.exact``) from the weights and the integer bounds
of the tensors before it. Each op's step is its module's ``onnx_spiking`` implementation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_write_bytes
from edgekit.graph import Graph, Node
from edgekit.ops import OPS, implementation, missing
from edgekit.spiking import is_int8, is_spiking

from .to_onnx import BATCH, _Emitter

EXACT_LIMIT = 1 << 24  # float32 holds every integer up to here


def snn_to_onnx(graph: Graph, path: str | Path) -> Path:
    """Write the spiking ``graph`` as an unrolled ``.onnx`` file."""
    path = Path(path)
    atomic_write_bytes(path, snn_onnx_model(graph).SerializeToString())
    return path


def snn_onnx_model(graph: Graph) -> Any:
    """The unrolled ``onnx.ModelProto`` of a spiking Graph."""
    import onnx
    from onnx import helper

    graph.validate()
    if not is_spiking(graph):
        raise EdgekitError("not a spiking Graph (no metadata timesteps); use to_onnx")
    if graph.metadata.get("encoding", "direct") != "direct":
        raise EdgekitError("only direct-encoded SNNs unroll to ONNX: rate encoding draws its "
                           "input spikes at run time")
    integer = is_int8(graph)
    if integer:
        missing({n.op for n in graph.nodes}, "onnx_spiking", "the int8 spiking ONNX writer")
    steps = graph.metadata["timesteps"]
    unrolled = Graph(graph.inputs, graph.outputs, dict(graph.tensors), [], graph.params,
                     graph.metadata)
    e = SpikingEmitter(unrolled, graph, integer)
    for t in range(steps):
        def at(name: str, t: int = t) -> str:
            return name if name in graph.params or name in graph.inputs else f"{name}@{t}"

        for node in graph.nodes:
            for name in (*node.inputs, *node.outputs):
                unrolled.tensors.setdefault(at(name), graph.tensors[name])
            step = Node(node.op, [at(n) for n in node.inputs], [at(node.outputs[0])],
                        node.attrs, node.name)
            if integer or OPS[node.op].neuron:  # its last node computes the step's output
                implementation(node.op, "onnx_spiking").fn(e, step, node)
                e.name_output(step.outputs[0])
            else:
                e.visit(step)
    outputs = []
    for out in graph.outputs:
        if integer:  # int32 sums; the edge divides by T and dequantizes
            total = e.cast(f"{out}@0", "INT32")
            for t in range(1, steps):
                total = e.add("Add", [total, e.cast(f"{out}@{t}", "INT32")])
            e.add("Identity", [total], out)
            outputs.append(helper.make_tensor_value_info(out, onnx.TensorProto.INT32,
                                                         [BATCH, *graph.tensors[out].shape[1:]]))
        else:
            total = e.add("Sum", [f"{out}@{t}" for t in range(steps)])
            e.add("Div", [total, e.const(np.float32(steps))], out)
            outputs.append(e.value_info(out))
    return e.model(graph.metadata.get("name", "edgekit-snn"), outputs)


class SpikingEmitter(_Emitter):
    """``to_onnx``'s emitter with what the ops' ``onnx_spiking`` visitors share: the neurons'
    membranes carried from step to step (by threshold param), initializers made once for all
    steps, casts, and for an int8 Graph each tensor's integer bound, from which the visitors
    that run on float32 Conv prove that no partial sum reaches 2^24 (``exact``)."""

    def __init__(self, unrolled: Graph, graph: Graph, integer: bool):
        super().__init__(unrolled)
        self.integer = integer
        self.membranes: dict[str, str] = {}
        self.shared: dict[str, str] = {}
        self.bounds: dict[str, int] = {}
        for name in graph.inputs if integer else ():  # the int8 input less its zero point
            if graph.tensors[name].dtype == "int8":
                zp = graph.tensors[name].quant.zero_point[0]
                self.bounds[name] = max(abs(-128 - zp), abs(127 - zp))

    def name_output(self, name: str) -> None:
        """Give the last node's output (a visitor's result) the step's tensor name."""
        self._rename(name)

    def cast(self, x: str, to: str) -> str:
        from onnx import TensorProto

        return self.add("Cast", [x], to=getattr(TensorProto, to))

    def once(self, key: str, make) -> str:
        """An initializer made once per key (params are shared by every step)."""
        if key not in self.shared:
            self.shared[key] = self.const(make())
        return self.shared[key]

    def centred(self, node: Node, x: str, to: str) -> str:
        """Step input ``x`` of ``node`` as ``to`` ("FLOAT" or "INT32"), less the zero point of
        the node's input (the graph input's; spikes and currents have none)."""
        zp = self.graph.tensors[node.inputs[0]].quant.zero_point[0]
        y = self.cast(x, to)
        return self.add("Sub", [y, self.const(_DTYPES[to](zp))]) if zp else y

    def bound(self, name: str) -> int:
        """The largest magnitude of tensor ``name``'s integers (int32's where unknown)."""
        return self.bounds.get(name, 1 << 31)

    def exact(self, node: Node, worst: int, what: str) -> None:
        """Raise unless ``worst``, the largest sum ``what`` of ``node`` can make in a float32
        ONNX op, stays below 2^24."""
        if worst >= EXACT_LIMIT:
            raise EdgekitError(f"{node.op} ({node.name or node.outputs[0]}): {what} in ONNX "
                               f"could sum to {worst} >= 2^24, where float32 stops holding "
                               "every integer; this int8 SNN has no exact ONNX form (run it on "
                               "the edgekit runtime)")


_DTYPES = {"FLOAT": np.float32, "INT32": np.int32}
