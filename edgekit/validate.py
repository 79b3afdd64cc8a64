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
from edgekit.quant.edge import dequantize_layers
from edgekit.targets import deploy


def validate(graph: Graph, target: str, x: np.ndarray, y: np.ndarray | None = None,
             float_graph: Graph | None = None, per_layer: bool = True,
             timeout: float | None = None) -> dict[str, Any]:
    """Run ``graph`` on ``target`` and on edgekit's runtime (and ``float_graph``, if given).
    Labels ``y`` are class indices, one per sample (``metrics.class_labels``: checked before
    anything is deployed, their range against the model's outputs). ``timeout``: seconds an
    inference may take on a board (``mcu:*``; default: from the model's expected cost)."""
    if len(x) == 0:
        raise EdgekitError("validation data is empty")
    if y is not None:
        y = metrics.class_labels(y, len(x))
    with deploy(graph, target, timeout=timeout) as session:
        out = session.run(x)
        layers = _layers(session, x) if per_layer else None
    with deploy(graph, "cpu") as runtime:
        ref = runtime.run(x)
        ref_layers = runtime.run_layers(x) if layers is not None else None
    report: dict[str, Any] = {"target": target, "samples": int(len(x)),
                              "vs_edgekit_runtime": metrics.compare(ref, out)}
    if y is not None:
        report["accuracy"] = metrics.accuracy(out, y)
        report["edgekit_runtime_accuracy"] = metrics.accuracy(ref, y)
    if float_graph is not None:
        float_out = deploy(float_graph, "cpu").run(x)
        report["vs_float"] = metrics.compare(float_out, out)
        if y is not None:
            report["float_accuracy"] = metrics.accuracy(float_out, y)
    if layers is not None:  # compared in real units: int8 layers dequantized
        layers, ref_layers = (dequantize_layers(graph, t) for t in (layers, ref_layers))
        report["layers"] = [{"tensor": name, **metrics.compare(ref_layers[name], value)}
                            for name, value in layers.items() if name in ref_layers]
    notes = getattr(session, "notes", None)
    if notes:
        report["notes"] = list(notes)
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


def _layers(session: Any, x: np.ndarray) -> dict[str, np.ndarray] | None:
    try:
        return session.run_layers(x)
    except EdgekitError:
        return None
