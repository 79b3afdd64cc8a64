"""Compare several models on one target: one row per model (accuracy on labelled data when
given, latency, energy, memory) and which of them lie on the accuracy-versus-cost Pareto front.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit import metrics
from edgekit.graph import Graph, load
from edgekit.profile.devices import DeviceProfile


def pareto_front(costs: list[float], values: list[float], maximize_y: bool = True) -> list[int]:
    """Indices of the points no other point beats: cost no higher and value no worse, one of
    them strictly (values are minimised instead when ``maximize_y`` is False)."""
    sign = 1 if maximize_y else -1

    def beats(j: int, i: int) -> bool:
        better = sign * values[j] >= sign * values[i] and costs[j] <= costs[i]
        return better and (sign * values[j] > sign * values[i] or costs[j] < costs[i])

    return [i for i in range(len(costs)) if not any(beats(j, i) for j in range(len(costs)))]


def compare(models: dict[str, Graph | str | Path], target: str = "cpu",
            data: tuple[np.ndarray, Any] | None = None, runs: int = 50, warmup: int = 5,
            device: str | DeviceProfile | None = None,
            timeout: float | None = None) -> list[dict[str, Any]]:
    """Profile every model (name -> Graph or ``.ekm`` path) on ``target``; ``data`` = (inputs,
    labels) adds accuracy, measured on the target itself. Rows carry ``pareto_energy`` and
    ``pareto_latency`` flags when every model has an accuracy. ``timeout``: as ``profile``'s."""
    from edgekit.profile import profile
    from edgekit.targets import deploy

    rows = []
    for name, model in models.items():
        graph = model if isinstance(model, Graph) else load(model)
        x = data[0][:1] if data is not None else None
        report = profile(graph, target, x, runs, warmup, device=device, per_layer=False,
                         name=name, timeout=timeout)
        accuracy = None
        if data is not None and data[1] is not None:
            with deploy(graph, target=target, timeout=timeout) as session:
                accuracy = metrics.accuracy(session.run(data[0]), data[1])
        lat = report["latency_ms"]
        rows.append({
            "model": report["model"], "target": target, "accuracy": accuracy,
            "latency_ms": lat["p50"] if lat["p50"] is not None else lat["estimate_ms"],
            "latency_p99_ms": lat["p99"], "latency_source": lat["source"],
            "energy_model_uj": report["energy"]["model_uj_per_inference"],
            "energy_measured_uj": report["energy"]["measured_uj_per_inference"],
            "macs": report["totals"]["macs"], "weight_bytes": report["totals"]["weight_bytes"],
            "peak_activation_bytes": report["totals"]["peak_activation_bytes"],
            "fits": all(f["fits"] for f in report["fits"].values()),
        })
    if all(r["accuracy"] is not None for r in rows):
        acc = [r["accuracy"] for r in rows]
        for key, cost in (("pareto_energy", "energy_model_uj"), ("pareto_latency", "latency_ms")):
            front = set(pareto_front([r[cost] for r in rows], acc))
            for i, r in enumerate(rows):
                r[key] = i in front
    return rows
