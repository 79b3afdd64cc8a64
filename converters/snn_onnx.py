"""A spiking Graph → ONNX with time unrolled: T copies of the network, the neurons' membranes
carried from each copy to the next, and the outputs averaged over the steps as the runtime does.

ONNX has no neuron state, but a fixed T unrolls exactly: step t's tensors are named
``name@t``, params and the (direct-encoded) input are shared by every step, and a neuron is
``U = leak·V + x``, ``S = Cast(U >= θ)``, ``out = S·θ``, then ``V = U − out`` (reset by
subtraction) or ``V = U·(1 − S)`` (to zero), starting from its initial membrane. Every other op
is written by ``to_onnx``'s visitors, so ONNX Runtime checks the event-driven runtime against
dense kernels written independently. Rate encoding draws random spikes inside the runtime;
its ONNX form would need the same draws as inputs, so it is not exported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph, Node
from edgekit.ops import NEURON_OPS

from .to_onnx import _VISITORS, IR_VERSION, OPSET, _Emitter


def snn_to_onnx(graph: Graph, path: str | Path) -> Path:
    """Write the spiking ``graph`` as an unrolled ``.onnx`` file."""
    import onnx

    path = Path(path)
    onnx.save_model(snn_onnx_model(graph), str(path))
    return path


def snn_onnx_model(graph: Graph) -> Any:
    """The unrolled ``onnx.ModelProto`` of a spiking Graph."""
    import onnx
    from onnx import helper

    graph.validate()
    steps = graph.metadata.get("timesteps")
    if steps is None:
        raise EdgekitError("not a spiking Graph (no metadata timesteps); use to_onnx")
    if graph.metadata.get("encoding", "direct") != "direct":
        raise EdgekitError("only direct-encoded SNNs unroll to ONNX: rate encoding draws its "
                           "input spikes at run time")
    unrolled = Graph(graph.inputs, graph.outputs, dict(graph.tensors), [], graph.params,
                     graph.metadata)
    e = _Emitter(unrolled)
    membranes: dict[str, str] = {}
    for t in range(steps):
        def at(name: str, t: int = t) -> str:
            return name if name in graph.params or name in graph.inputs else f"{name}@{t}"

        for node in graph.nodes:
            for name in (*node.inputs, *node.outputs):
                unrolled.tensors.setdefault(at(name), graph.tensors[name])
            step = Node(node.op, [at(n) for n in node.inputs], [at(node.outputs[0])],
                        node.attrs, node.name)
            ins = [e.float_in(n) for n in step.inputs]
            if node.op in NEURON_OPS:
                _neuron(e, step, ins, membranes)
            else:
                _VISITORS[node.op](e, step, ins)
                e._rename(step.outputs[0])
    for out in graph.outputs:
        total = e.add("Sum", [f"{out}@{t}" for t in range(steps)])
        e.add("Div", [total, e.const(np.float32(steps))], out)
    onnx_graph = helper.make_graph(e.nodes, graph.metadata.get("name", "edgekit-snn"),
                                   [e.value_info(n) for n in graph.inputs],
                                   [e.value_info(n) for n in graph.outputs], e.initializers)
    model = helper.make_model(onnx_graph, producer_name="edgekit",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def _neuron(e: _Emitter, node: Node, ins: list[str], membranes: dict[str, str]) -> None:
    """One step of one neuron layer; ``membranes`` maps the layer to its membrane so far."""
    from onnx import TensorProto

    x, threshold = ins[0], ins[1]
    key = node.inputs[1]  # the threshold param names the layer across steps
    v = membranes.get(key) or (ins[2] if len(ins) > 2 else e.const(
        np.zeros(e.graph.tensors[node.inputs[1]].shape, np.float32)))
    if node.op == "lif_neuron":
        v = e.add("Mul", [v, e.const(np.float32(node.attrs["leak"]))])
    u = e.add("Add", [v, x])
    spikes = e.add("Cast", [e.add("GreaterOrEqual", [u, threshold])], to=TensorProto.FLOAT)
    out = e.add("Mul", [spikes, threshold], node.outputs[0])
    if node.attrs["reset"] == "subtract":
        membranes[key] = e.add("Sub", [u, out])
    else:
        membranes[key] = e.add("Mul", [u, e.add("Sub", [e.const(np.float32(1)), spikes])])
