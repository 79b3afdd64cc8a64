"""Latency from real timed runs: warm-up, then N runs, each timed with ``perf_counter_ns``.

Whole-model times come from ``Session.run`` on any target (the edge conversion of int8 Graphs
included, as a user calls it). Per-layer times come from the edgekit runtime's bound steps
(``Program.steps``, one per node, timed one by one without touching the executor) and, for ONNX
Runtime, from its own profiler (its nodes are the written ONNX model's, not the Graph's).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.graph import Graph


def stats(times_ms: np.ndarray | list[float]) -> dict[str, Any]:
    """p50/p90/p99/min/max/mean/std in milliseconds over the timed runs. The mean is kept within
    [min, max], where the true mean lies: summing and dividing equal times can round a ulp out."""
    t = np.asarray(times_ms, np.float64)
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "min": float(t.min()),
            "max": float(t.max()), "mean": float(np.clip(t.mean(), t.min(), t.max())),
            "std": float(t.std()), "runs": int(t.size)}


def time_calls(fn: Callable[[], Any], runs: int, warmup: int) -> np.ndarray:
    """Milliseconds of each of ``runs`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter_ns()
        fn()
        times[i] = (time.perf_counter_ns() - start) / 1e6
    return times


def time_runtime_layers(graph: Graph, inputs: Any, runs: int, warmup: int) -> np.ndarray:
    """[runs, nodes] milliseconds per node on the edgekit runtime, for these inputs (for a
    spiking Graph, per time step on its SpikingExecutor's kernels)."""
    from edgekit.quant.edge import graph_feeds
    from edgekit.runtime import executor_for

    executor = executor_for(graph)
    executor.run(inputs)  # loads the inputs into the arena of the program for their batch size
    batch = next(iter(graph_feeds(graph, inputs).values())).shape[0]
    steps = executor.program(batch).steps
    for _ in range(warmup):
        for step in steps:
            step()
    times = np.empty((runs, len(steps)))
    for r in range(runs):
        for i, step in enumerate(steps):
            start = time.perf_counter_ns()
            step()
            times[r, i] = (time.perf_counter_ns() - start) / 1e6
    return times


def time_onnxruntime_nodes(session: Any, feeds: list[np.ndarray], runs: int,
                           warmup: int) -> list[dict[str, Any]]:
    """Per ONNX node times from ONNX Runtime's profiler, on a twin of ``session`` (the same
    model and graph-optimization level, profiling on)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = session.options.graph_optimization_level
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        twin = ort.InferenceSession(session.model.SerializeToString(), options,
                                    providers=session.providers)
        named = dict(zip(session.graph.inputs, feeds, strict=True))
        for _ in range(warmup + runs):
            twin.run(session.graph.outputs, named)
        events = json.loads(Path(twin.end_profiling()).read_text())
    per_node: dict[str, list[float]] = {}
    op_type: dict[str, str] = {}
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            name = ev["name"].removesuffix("_kernel_time")
            per_node.setdefault(name, []).append(ev["dur"] / 1e3)
            op_type[name] = ev.get("args", {}).get("op_name", "")
    return [{"name": name, "op": op_type[name], **stats(t[-runs:])}
            for name, t in per_node.items()]
