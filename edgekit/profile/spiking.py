"""What a spiking Graph costs, counted from the spikes it really fires on given inputs.

Counts come from one recorded inference (``SpikingExecutor.record``): spikes per neuron layer
per time step and firing rates, and the synaptic operations (SOPs) each event-driven layer
made, which its kernel counts as it adds weights (``SOP = Σ_t events × fanout``, fanout being
the outputs an input element reaches). Energy follows docs/algorithms.md (Horowitz 45 nm):
``E_SNN = E_MAC · MACs(dense layers fed the analog input) + E_AC · Σ SOPs`` against
``E_ANN = E_MAC · Σ MACs`` of the same network run once as an ANN. The dense first layer sees
the same input at every step under direct encoding, so its MACs count once, as in the formula.
An int8 SNN (``edgekit.quant.spiking``) adds int8 weights into int32 sums: its SOPs cost the
int32 accumulate (``add_int8``), its first layer and the ANN it is compared with int8 MACs
(``mac_int8``).
"""

from __future__ import annotations

from typing import Any

from edgekit.graph import Graph
from edgekit.ops import NEURON_OPS
from edgekit.profile.devices import DeviceProfile
from edgekit.spiking import is_int8, schedule


def spiking_counts(graph: Graph, inputs: Any, device: DeviceProfile) -> dict[str, Any]:
    """Per-layer spikes, firing rates and SOPs (per inference, averaged over the batch) and
    the modelled energies E_SNN and E_ANN in µJ."""
    from edgekit.runtime.spiking import SpikingExecutor

    traces, sops = SpikingExecutor(graph).record(inputs)
    plan = schedule(graph)
    steps = graph.metadata["timesteps"]
    batch = next(iter(traces.values())).shape[1]
    neurons, synapses = [], []
    for node, event, ops in zip(graph.nodes, plan.event_driven, sops, strict=True):
        name = node.name or node.outputs[0]
        if node.op in NEURON_OPS:
            fired = (traces[node.outputs[0]] != 0).reshape(steps, batch, -1).sum(axis=2)
            per_step = fired.mean(axis=1)
            size = graph.tensors[node.outputs[0]].size
            neurons.append({"name": name, "neurons": size,
                            "spikes_per_step": [float(s) for s in per_step],
                            "firing_rate": float(per_step.sum() / (steps * size))})
        elif event:
            synapses.append({"name": name, "synaptic_ops": ops / batch})
    dense = sum(graph.node_macs(node) for node, first in zip(graph.nodes, plan.first_layer,
                                                              strict=True) if first)
    all_macs = sum(graph.node_macs(node) for node in graph.nodes)
    total_sops = sum(s["synaptic_ops"] for s in synapses)
    e = device.energy_pj
    mac, add = ("mac_int8", "add_int8") if is_int8(graph) else ("mac_float32", "add_float32")
    e_snn = dense * e[mac] + total_sops * e[add]
    e_ann = all_macs * e[mac]
    return {"timesteps": steps, "encoding": graph.metadata.get("encoding", "direct"),
            "neurons": neurons,
            "synapses": synapses, "synaptic_ops": total_sops, "first_layer_macs": dense,
            "membrane_bytes": 4 * sum(n["neurons"] for n in neurons),
            "ann_macs": all_macs, "e_snn_uj": e_snn / 1e6, "e_ann_uj": e_ann / 1e6,
            "energy_ratio_ann_over_snn": e_ann / e_snn if e_snn else float("inf"),
            "basis": f"E_SNN = {e[mac]} pJ x first-layer MACs + {e[add]} pJ x SOPs; "
                     f"E_ANN = {e[mac]} pJ x MACs ({device.name} table)",
            "samples": int(batch)}


def add_to(info: dict[str, Any], graph: Graph, inputs: Any, device: DeviceProfile) -> None:
    """Put the spike counts into ``counts.describe``'s result: a ``spiking`` section, in the
    layer table each event-driven layer's SOPs as its accumulates, with no MACs, and the
    neurons' membranes (float32, batch 1) in the peak memory."""
    found = info["spiking"] = spiking_counts(graph, inputs, device)
    by_name = {s["name"]: s["synaptic_ops"] for s in found["synapses"]}
    for layer, event in zip(info["layers"], schedule(graph).event_driven, strict=True):
        if event and layer["name"] in by_name:
            sops = by_name[layer["name"]]
            layer.update(macs=0, flops=0, accumulates=sops, synaptic_ops=sops)
    totals = info["totals"]
    totals["macs"] = sum(la["macs"] for la in info["layers"])
    totals["flops"] = 2 * totals["macs"]
    totals["accumulates"] = totals["synaptic_ops"] = found["synaptic_ops"]
    totals["peak_activation_bytes"] += found["membrane_bytes"]  # state kept outside the arena
