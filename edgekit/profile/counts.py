"""Operation and memory counts of a Graph, per layer and in total, from the op table alone.

MACs come from ``Graph.node_macs`` (``edgekit/ops.py``: conv = output elements x kernel volume
per group, linear = outputs x in-features, avg pools = one per window element, mul and
layernorm per element); FLOPs are reported as exactly 2 x MACs and named so, never mixed with
MACs. Peak activation bytes are the arena edgekit's runtime allocates (greedy planner, scratch
buffers included); the naive figure gives every buffer its own bytes, as a runtime without a
planner would.
"""

from __future__ import annotations

from typing import Any

from edgekit.graph import Graph, Node
from edgekit.ops import OPS
from edgekit.profile.devices import DeviceProfile

ACTIVATION_REF_BYTES = 4  # a float32 activation element: the unit of data-type-aware intensity


def _elements(graph: Graph, names: list[str]) -> int:
    return sum(graph.tensors[n].size for n in names)


def _nbytes(graph: Graph, names: list[str]) -> int:
    return sum(graph.tensors[n].nbytes for n in names)


def layer_counts(graph: Graph, node: Node, device: DeviceProfile | None = None) -> dict[str, Any]:
    """One node's counts: MACs, FLOPs, params, weight bytes by dtype, activation bytes moved,
    arithmetic intensity and (with a device) the data-type-aware intensity."""
    weights = [n for n in node.inputs if n in graph.params]
    acts_in = [n for n in node.inputs if n not in graph.params]
    macs = graph.node_macs(node)
    by_dtype: dict[str, int] = {}
    for n in weights:
        by_dtype[graph.tensors[n].dtype] = by_dtype.get(graph.tensors[n].dtype, 0) \
            + graph.tensors[n].nbytes
    elements = _elements(graph, [*node.inputs, *node.outputs])
    out = {
        "name": node.name or node.outputs[0], "op": node.op,
        "activation": node.attrs.get("activation", "none"),
        "dtype": graph.tensors[node.inputs[1 if OPS[node.op].indexed else 0]].dtype,
        "output_shape": list(graph.tensors[node.outputs[0]].shape),
        "macs": macs, "flops": 2 * macs,
        "accumulates": 0, "synaptic_ops": 0,  # spiking layers: none in the op set yet
        "params": _elements(graph, weights),
        "weight_bytes": sum(by_dtype.values()), "weight_bytes_by_dtype": by_dtype,
        "input_bytes": _nbytes(graph, acts_in), "output_bytes": _nbytes(graph, node.outputs),
        "elements_moved": elements,
        "arithmetic_intensity": macs / elements,
    }
    if device is not None:
        out["weighted_elements_moved"] = weighted_elements(graph, node, device)
        out["dtype_aware_intensity"] = macs / out["weighted_elements_moved"]
    return out


def weighted_elements(graph: Graph, node: Node, device: DeviceProfile) -> float:
    """The elements a node moves, each weighted by what fetching it costs on ``device``: the
    denominator of the data-type-aware intensity (Jha & Mittal, IEEE TC 2021; **inferred**).

    Plain intensity divides MACs by |W| + |I| + |O|. Here each element counts as its bytes
    times the pJ per byte of the memory it lives in (weights: ``weight_memory``, activations:
    ``activation_memory``), relative to a float32 activation access. So a float32 model whose
    weights and activations share one memory gets its plain intensity back; int8 data, or
    weights in cheaper memory, raise it.
    """
    def per_byte(memory: str) -> float:
        return device.energy_pj[f"access_{memory}"] / 8

    ref = ACTIVATION_REF_BYTES * per_byte(device.activation_memory)
    cost = sum(graph.tensors[n].nbytes * per_byte(device.weight_memory if n in graph.params
                                                   else device.activation_memory)
               for n in [*node.inputs, *node.outputs])
    return cost / ref


def memory(graph: Graph) -> dict[str, int]:
    """Peak activation bytes (the planned arena the runtime really allocates at batch 1) and
    the naive figure (every activation and scratch buffer in its own bytes); a spiking Graph's
    are its SpikingExecutor's (event-driven scratch, int8 kernels)."""
    from edgekit.runtime import executor_for
    from edgekit.runtime.planner import NaivePlanner

    executor = executor_for(graph)
    return {"peak_activation_bytes": executor.program(1).plan.size,
            "naive_activation_bytes": executor.program(1, NaivePlanner()).plan.size}


def describe(graph: Graph, device: DeviceProfile | None = None) -> dict[str, Any]:
    """Inputs, outputs, per-layer counts and totals: what ``edgekit inspect`` shows and what
    ``profile`` builds on."""
    layers = [layer_counts(graph, node, device) for node in graph.nodes]
    by_dtype: dict[str, int] = {}
    for p in graph.params:
        by_dtype[graph.tensors[p].dtype] = by_dtype.get(graph.tensors[p].dtype, 0) \
            + graph.tensors[p].nbytes
    macs = sum(la["macs"] for la in layers)
    intensity = {"arithmetic_intensity": macs / sum(la["elements_moved"] for la in layers)}
    if device is not None:
        intensity["dtype_aware_intensity"] = macs / sum(la["weighted_elements_moved"]
                                                        for la in layers)
    return {
        "inputs": {n: list(graph.tensors[n].shape) for n in graph.inputs},
        "outputs": {n: list(graph.tensors[n].shape) for n in graph.outputs},
        "layers": layers,
        "totals": {"nodes": len(layers), "macs": macs, "flops": 2 * macs,
                   "accumulates": sum(la["accumulates"] for la in layers),
                   "synaptic_ops": sum(la["synaptic_ops"] for la in layers),
                   "params": sum(graph.tensors[p].size for p in graph.params),
                   "weight_bytes": sum(by_dtype.values()), "weight_bytes_by_dtype": by_dtype,
                   **intensity, **memory(graph)},
    }
