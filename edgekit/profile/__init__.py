"""``edgekit.profile``: what a model costs on a target — operation counts, memory, latency
percentiles and energy, per model and per layer, each figure labelled for what it is.

``edgekit.profile(graph, target="cpu")`` returns a ``Report``. The package is itself callable,
so ``edgekit.profile`` is both this function and the package holding its parts (``counts``,
``latency``, ``energy``, ``fit``, ``devices``, ``report``, ``plot``, ``compare``).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph, load
from edgekit.profile import counts, energy, exits, latency, spiking
from edgekit.profile.devices import DeviceProfile, load_profile, profile_names
from edgekit.profile.fit import Limit, check_fit, firmware_footprint, require_fit
from edgekit.profile.report import Report
from edgekit.spiking import is_spiking

__all__ = ["DeviceProfile", "Limit", "Report", "check_fit", "default_device", "load_profile",
           "profile", "profile_names", "require_fit"]

DI_NOTE = ("DI = data-type-aware arithmetic intensity (Jha & Mittal 2021, formula inferred): "
           "MACs per element weighted by its bytes x the pJ/byte of its memory, relative to a "
           "float32 activation access; AI = MACs / (weight + input + output elements)")


def default_device(target: str) -> str:
    """The profile of the hardware ``target`` runs on: its own (MCU targets), else the GPU
    class for ``gpu`` and the detected host for CPU targets."""
    from edgekit.targets import get_target

    own = getattr(get_target(target), "profile", None)
    return own or ("jetson-class-gpu" if target.startswith("gpu") else "host")


def profile(graph: Graph | str | Path, target: str = "cpu", inputs: Any = None,
            runs: int = 100, warmup: int = 10, *, device: str | Path | DeviceProfile | None = None,
            per_layer: bool = True, name: str | None = None,
            timeout: float | None = None, exit_inputs: np.ndarray | None = None,
            exit_policy: str | None = None, **options: Any) -> Report:
    """Profile ``graph`` on ``target``: counts, memory fit and modelled energy always; latency
    from ``runs`` timed runs after ``warmup`` (per layer where the backend allows) and measured
    energy where a counter is readable.

    ``inputs`` defaults to one seeded random sample. ``device`` names a profile other than the
    target's own hardware (``cortex-m4``): that device is not attached, so latency is estimated
    from its clock and cycles per MAC and every such figure says so. ``timeout``: seconds an
    inference may take on a board (``mcu:*``; default: from the model's expected cost).
    ``options`` go to the target's ``compile`` (``kernels="reference"`` for ``cpu:litert``).
    An early-exit Graph also gets ``early_exit`` (``profile/exits.py``): each exit's cost, and
    the policy's (``exit_policy``, else the stored one) expected cost over ``exit_inputs``.
    """
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise EdgekitError(f"runs must be a whole number of timed runs >= 1, got {runs!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise EdgekitError(f"warmup must be a whole number of runs >= 0, got {warmup!r}")
    if not isinstance(graph, Graph):
        name = name or Path(graph).stem
        graph = load(graph)
    graph.validate()
    own = default_device(target)
    dev = load_profile(device or own)
    attached = dev.name == load_profile(own).name
    info = counts.describe(graph, dev)
    if is_spiking(graph):  # a spiking Graph (converters.snn)
        spiking.add_to(info, graph, _inputs(graph, inputs), dev)
    for layer in info["layers"]:
        layer["energy_model_uj"] = sum(energy.layer_energy_pj(layer, dev).values()) / 1e6
        layer["time_ms"] = None
    totals = info["totals"]
    limits = check_fit(graph, dev, totals["peak_activation_bytes"])
    breakdown = {k: sum(energy.layer_energy_pj(la, dev)[k] for la in info["layers"]) / 1e6
                 for k in ("compute", "weights", "activations")}
    data: dict[str, Any] = {
        "schema": "edgekit-profile/1",
        "model": name or graph.metadata.get("name", "model"),
        "target": target,
        "device": {k: v for k, v in dev.to_json().items() if k != "energy_pj"},
        "totals": totals,
        "fits": {lim.name: lim.to_json() for lim in limits},
        "layers": info["layers"],
        "backend_layers": [],
        "energy": {"model_uj_per_inference": sum(breakdown.values()),
                   "model_breakdown_uj": breakdown,
                   "model_basis": f"counts x {dev.name} energy table (Horowitz 45 nm); "
                                  "dynamic energy only",
                   "measured_uj_per_inference": None, "measured_unavailable_reason": None,
                   "measured_source": None},
        "notes": [DI_NOTE],
    }
    if dev.kind == "mcu" and limits[0].memory == "runtime":
        _why_runtime_memory(data, graph, dev)
    if "spiking" in info:
        data["spiking"] = info["spiking"]
        data["notes"].append("spiking: counts from one recorded inference on the given inputs")
    if attached:
        _measure(data, graph, target, _inputs(graph, inputs), runs, warmup, per_layer, dev,
                 timeout, **options)
    else:
        _estimate(data, dev)
    if exits.is_early_exit(graph):
        exits.add_to(data, graph, _inputs(graph, inputs), runs, warmup, exit_inputs,
                     exit_policy)
    return Report(data)


def _why_runtime_memory(data: dict[str, Any], graph: Graph, dev: DeviceProfile) -> None:
    """The note saying why a microcontroller's fit counts the runtime's arena (the firmware's
    C writer refused the Graph)."""
    try:
        firmware_footprint(graph)
    except EdgekitError as err:
        data["notes"].append(f"fits: edgekit runtime's arena, not the firmware's: the {dev.name} "
                             f"firmware cannot run this Graph ({err})")


def _inputs(graph: Graph, inputs: Any) -> Any:
    if inputs is not None:
        return inputs
    rng = np.random.default_rng(0)  # int32 indices (embedding): row 0, in every table
    feeds = {n: np.zeros(graph.tensors[n].shape, np.int32) if graph.tensors[n].dtype == "int32"
             else rng.standard_normal(graph.tensors[n].shape).astype(np.float32)
             for n in graph.inputs}
    return feeds[graph.inputs[0]] if len(feeds) == 1 else feeds


def _measure(data: dict[str, Any], graph: Graph, target: str, x: Any, runs: int, warmup: int,
             per_layer: bool, dev: DeviceProfile, timeout: float | None = None,
             **options: Any) -> None:
    """Timed runs of the deployed graph with the energy counter around them; per-layer times."""
    from edgekit.profile.energy import meter_for
    from edgekit.targets import deploy

    meter = meter_for(target)
    with deploy(graph, target=target, timeout=timeout, **options) as session:
        call = lambda: session.run(x)
        latency.time_calls(call, 0, warmup)
        if meter.available:
            meter.start()
        times = latency.time_calls(call, runs, 0)
        if meter.available:
            joules = meter.stop()
            data["energy"].update(measured_uj_per_inference=joules * 1e6 / runs,
                                  measured_source=meter.source,
                                  measured_window_s=float(times.sum()) / 1e3)
            if times.sum() < 1e3:
                data["notes"].append("measured energy spans under 1 s of runs; the counter "
                                     "updates about every millisecond: add --runs to steady it")
        else:
            data["energy"]["measured_unavailable_reason"] = meter.reason
        if hasattr(session, "device_profile"):  # a board: its own count, per layer on request
            _device_run(data, graph, session, x, per_layer, dev)
        elif per_layer:
            _per_layer(data, graph, target, session, x, runs, warmup, dev)
    emulated = target.startswith("mcu:qemu")
    data["latency_ms"] = {**latency.stats(times), "warmup": warmup,
                          "source": "emulated" if emulated else "measured", "estimate_ms": None}
    if emulated:
        data["notes"].append("latency is the emulator's host time plus the serial round trip, "
                             "not the device's")


def _per_layer(data: dict[str, Any], graph: Graph, target: str, session: Any, x: Any,
               runs: int, warmup: int, dev: DeviceProfile) -> None:
    """Per-layer figures from whatever the backend offers; a note where it offers none."""
    if target == "cpu":
        per_node = latency.time_runtime_layers(graph, x, runs, warmup)
        for layer, t in zip(data["layers"], per_node.T, strict=True):
            layer["time_ms"] = latency.stats(t)
        if "spiking" in data:
            data["notes"].append("per-layer times are of one time step on the runtime's kernels")
    elif target == "cpu:onnxruntime":
        from edgekit.quant.edge import graph_feeds

        feeds = list(graph_feeds(graph, x).values())
        data["backend_layers"] = latency.time_onnxruntime_nodes(session, feeds, runs, warmup)
        data["notes"].append("per-node times are ONNX Runtime's profiler's, over the nodes of "
                             "the written ONNX model")
    else:
        data["notes"].append(f"{target} times the whole model only: no per-layer times")


def _device_run(data: dict[str, Any], graph: Graph, session: Any, x: Any, per_layer: bool,
                dev: DeviceProfile) -> None:
    """What a board reported for one inference (``McuSession.device_profile``: instructions,
    flash and RAM of its image) and whether its outputs on ``x`` equal edgekit runtime's; with
    ``per_layer``, each layer's instruction count turned into device time at one instruction
    per cycle of the profile's clock (an estimate)."""
    from edgekit.targets import deploy

    run = session.device_profile(x)
    with deploy(graph, "cpu") as runtime:
        want, got = (_outputs(s.run(x)) for s in (runtime, session))
    run["vs_edgekit_runtime"] = {
        "identical": all(np.array_equal(a, b) for a, b in zip(want, got, strict=True)),
        "max_abs_error": max(float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0))
                             for a, b in zip(want, got, strict=True))}
    data["device_run"] = run
    work, unit = data["totals"]["macs"], "MAC"
    if "synaptic_ops" in run:  # a spiking model: most of its work is accumulates
        work, unit = work + run["synaptic_ops"], "MAC or synaptic operation"
    data["notes"].append(f"instructions: {run['source']} "
                         f"({run['instructions'] / max(work, 1):.2f} instructions per {unit})")
    if not per_layer:
        return
    counts = run["layer_instructions"]
    if len(counts) != len(data["layers"]):
        data["notes"].append(f"the board reported {len(counts)} steps for "
                             f"{len(data['layers'])} layers: per-layer counts not matched")
        return
    for layer, n in zip(data["layers"], counts, strict=True):
        layer["time_ms"] = {"instructions": n, "estimate": n / dev.clock_hz * 1e3}
    data["notes"].append(f"per layer: device time estimated at one instruction per cycle at "
                         f"{dev.clock_hz / 1e6:g} MHz")


def _outputs(out: Any) -> list[np.ndarray]:
    """A Session's outputs as a list (one array for a one-output Graph)."""
    return list(out) if isinstance(out, list) else [out]


def _estimate(data: dict[str, Any], dev: DeviceProfile) -> None:
    """Latency of a device that is not attached: MACs x cycles per MAC / clock per layer."""
    total = 0.0
    for layer in data["layers"]:
        dtype = "int8" if layer["dtype"] == "int8" else "float32"
        ms = layer["macs"] * dev.cycles_per_mac[dtype] / dev.clock_hz * 1e3
        layer["time_ms"] = {"estimate": ms}
        total += ms
    data["latency_ms"] = {k: None for k in ("p50", "p90", "p99", "min", "max", "mean", "std")}
    data["latency_ms"].update(runs=0, source="estimated", estimate_ms=total)
    data["energy"]["measured_unavailable_reason"] = f"{dev.name} is not attached"
    data["notes"].append(f"{dev.name} is not attached: latency is estimated as MACs x cycles per "
                         "MAC (inferred, from the profile) / clock, ignoring memory stalls and "
                         "non-MAC ops")


class _CallableModule(types.ModuleType):
    """Lets ``edgekit.profile(...)`` call ``profile`` even once the package is imported (the
    import binds the package, not the function, to ``edgekit.profile``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Report:
        return profile(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
