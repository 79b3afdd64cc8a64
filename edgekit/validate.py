"""Validate a deployed model the way STM32Cube.AI's "validate on target" does: run the target
on real data and say how far it is from the labels, the float model and edgekit's runtime —
per layer too, where the backend exposes intermediate tensors.

The same tensor names run through the float Graph, the quantized Graph and every backend
(quantization keeps names), which is what makes the per-layer comparison possible.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit import metrics
from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.quant.edge import dequantize_layers, quantize_array
from edgekit.spiking import is_spiking
from edgekit.targets import deploy


def validate(graph: Graph, target: str, x: np.ndarray, y: np.ndarray | None = None,
             float_graph: Graph | None = None, per_layer: bool = True,
             timeout: float | None = None, **options: Any) -> dict[str, Any]:
    """Run ``graph`` on ``target`` and on edgekit's runtime (and ``float_graph``, if given).
    Labels ``y`` are class indices, one per sample (``metrics.class_labels``: checked before
    anything is deployed, their range against the model's outputs). ``timeout``: seconds an
    inference may take on a board (``mcu:*``; default: from the model's expected cost).
    ``options`` go to the target's ``compile`` (``kernels="reference"`` for ``cpu:litert``).

    For int8 Graphs the report also counts, in quantization steps, how the target's int8
    outputs (``int8_vs_edgekit_runtime``) and int8 layers differ from the runtime's
    (``metrics.int8_steps``): whether a backend is bit-exact, and if not how far it drifts."""
    if len(x) == 0:
        raise EdgekitError("validation data is empty")
    if y is not None:
        y = metrics.class_labels(y, len(x))
    with deploy(graph, target, timeout=timeout, **options) as session:
        out = session.run(x)
        layers = _layers(session, x) if per_layer else None
    with deploy(graph, "cpu") as runtime:
        ref = runtime.run(x)
        ref_layers = runtime.run_layers(x) if layers is not None else None
    report: dict[str, Any] = {"target": target, "samples": int(len(x)),
                              "vs_edgekit_runtime": metrics.compare(ref, out)}
    steps = _int8_output_steps(graph, ref, out)
    if steps is not None:
        report["int8_vs_edgekit_runtime"] = steps
    if y is not None:
        report["accuracy"] = metrics.accuracy(out, y)
        report["edgekit_runtime_accuracy"] = metrics.accuracy(ref, y)
    if float_graph is not None:
        float_out = deploy(float_graph, "cpu").run(x)
        report["vs_float"] = metrics.compare(float_out, out)
        if y is not None:
            report["float_accuracy"] = metrics.accuracy(float_out, y)
    if layers is not None:  # compared in real units (int8 layers dequantized), and in steps
        steps = {name: metrics.int8_steps(ref_layers[name], value)
                 for name, value in layers.items()
                 if name in ref_layers and graph.tensors[name].dtype == "int8"}
        layers, ref_layers = (dequantize_layers(graph, t) for t in (layers, ref_layers))
        report["layers"] = [{"tensor": name, **metrics.compare(ref_layers[name], value),
                             **steps.get(name, {})}
                            for name, value in layers.items() if name in ref_layers]
        same = _layers_reproduce_outputs(graph, layers, out)
        if same is not None:
            report["layers_reproduce_outputs"] = same
    notes = list(getattr(session, "notes", None) or [])
    if report.get("layers_reproduce_outputs") is False:
        notes.append(f"{target}'s per-layer run does not reproduce its own outputs: the backend "
                     "computes the layers otherwise once they are exposed (ONNX Runtime fuses "
                     "fewer QDQ groups), so its layer rows are not what the model computes")
    if notes:
        report["notes"] = notes
    return report


def quantization_report(float_graph: Graph, quant_graph: Graph, x: np.ndarray) -> list[dict]:
    """Per-layer SQNR of the int8 activations against the float ones, worst layer flagged: the
    layer where SQNR drops the most is where quantization costs the accuracy."""
    with deploy(float_graph, "cpu") as fs, deploy(quant_graph, "cpu") as qs:
        ref, test = fs.run_layers(x), dequantize_layers(quant_graph, qs.run_layers(x))
    producers = quant_graph.producers()
    rows, previous = [], float("inf")
    for name in (n.outputs[0] for n in quant_graph.nodes):
        sqnr = metrics.snr_db(ref[name], test[name])
        node = producers[name]
        rows.append({"layer": node.name or name, "op": node.op, "tensor": name,
                     "sqnr_db": sqnr, "drop_db": previous - sqnr if np.isfinite(previous)
                     else 0.0})
        previous = sqnr
    worst = max(rows, key=lambda r: r["drop_db"], default=None)
    for row in rows:
        row["worst"] = row is worst
    return rows


def _int8_output_steps(graph: Graph, ref: Any, out: Any) -> dict[str, float] | None:
    """``metrics.int8_steps`` over the Graph's int8 outputs, taken together; None when it has
    none (an int8 spiking Graph's outputs are averages over time, not int8 values). Sessions
    hand out dequantized floats, ``(q - zero_point) * scale``: quantizing them again with the
    same parameters gives back the int8 values exactly."""
    if is_spiking(graph):
        return None
    ref, out = (r if isinstance(r, list) else [r] for r in (ref, out))
    pairs = [(quantize_array(a, graph.tensors[name].quant),
              quantize_array(b, graph.tensors[name].quant))
             for name, a, b in zip(graph.outputs, ref, out, strict=True)
             if graph.tensors[name].dtype == "int8"]
    if not pairs:
        return None
    return metrics.int8_steps(*(np.concatenate([p[i].ravel() for p in pairs]) for i in (0, 1)))


def _layers_reproduce_outputs(graph: Graph, layers: dict[str, np.ndarray],
                              out: Any) -> bool | None:
    """Whether the per-layer run's int8 output tensors equal the whole run's outputs (both
    dequantized alike); None when no int8 output is among the layers. A per-layer check that
    runs other kernels than the model (LiteRT's builtin ones beside XNNPACK, ORT's unfused QDQ
    beside its fused kernels) is caught here instead of trusted."""
    if is_spiking(graph):
        return None
    outs = out if isinstance(out, list) else [out]
    pairs = [(layers[name], o) for name, o in zip(graph.outputs, outs, strict=True)
             if name in layers and graph.tensors[name].dtype == "int8"]
    if not pairs:
        return None
    return all(np.array_equal(a, b) for a, b in pairs)


def _layers(session: Any, x: np.ndarray) -> dict[str, np.ndarray] | None:
    try:
        return session.run_layers(x)
    except EdgekitError:
        return None
