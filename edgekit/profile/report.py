"""The profile Report: one JSON document (schema below, documented in docs/profiling.md) and its
terminal rendering. Every figure says what it is: latency ``source`` is ``measured``,
``emulated`` or ``estimated``; energy is split into ``model_*`` and ``measured_*`` fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.console import table
from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_write_bytes

SCHEMA_ID = "edgekit-profile/1"

_NUM = {"type": "number"}
_INT = {"type": "integer"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}
_LATENCY = {"type": "object",
            "required": ["p50", "p90", "p99", "min", "max", "mean", "std", "runs"],
            "properties": {k: _NUM_OR_NULL for k in ("p50", "p90", "p99", "min", "max", "mean",
                                                      "std")} | {"runs": _INT}}
_LIMIT = {"type": "object",
          "required": ["limit", "needed_bytes", "available_bytes", "fits", "overshoot_bytes"],
          "properties": {"limit": {"type": "string"}, "needed_bytes": _INT,
                         "available_bytes": _INT, "fits": {"type": "boolean"},
                         "overshoot_bytes": _INT,
                         "memory": {"enum": ["firmware", "runtime"]}}}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["schema", "model", "target", "device", "totals", "latency_ms", "energy",
                 "fits", "layers", "notes"],
    "properties": {
        "schema": {"enum": [SCHEMA_ID]},
        "model": {"type": "string"},
        "target": {"type": "string"},
        "device": {"type": "object", "required": ["name", "description", "kind", "clock_hz"]},
        "totals": {"type": "object",
                   "required": ["macs", "flops", "params", "weight_bytes",
                                "peak_activation_bytes", "naive_activation_bytes",
                                "accumulates", "synaptic_ops"],
                   "properties": {k: _INT for k in ("macs", "flops", "params", "weight_bytes",
                                                    "peak_activation_bytes",
                                                    "naive_activation_bytes")}},
        "latency_ms": _LATENCY | {"required": [*_LATENCY["required"], "source"],
                                  "properties": _LATENCY["properties"] | {
                                      "source": {"enum": ["measured", "emulated",
                                                          "estimated"]},
                                      "estimate_ms": _NUM_OR_NULL}},
        "energy": {"type": "object",
                   "required": ["model_uj_per_inference", "model_breakdown_uj", "model_basis",
                                "measured_uj_per_inference", "measured_unavailable_reason"],
                   "properties": {"model_uj_per_inference": _NUM,
                                  "measured_uj_per_inference": _NUM_OR_NULL,
                                  "measured_unavailable_reason": _STR_OR_NULL,
                                  "measured_source": _STR_OR_NULL}},
        "fits": {"type": "object", "required": ["flash", "sram"],
                 "properties": {"flash": _LIMIT, "sram": _LIMIT}},
        "layers": {"type": "array", "items": {
            "type": "object",
            "required": ["name", "op", "dtype", "macs", "flops", "params", "weight_bytes",
                         "arithmetic_intensity", "energy_model_uj", "time_ms"],
            "properties": {"macs": _INT, "flops": _INT, "params": _INT,
                           "energy_model_uj": _NUM,
                           "time_ms": {"type": ["object", "null"]}}}},
        "backend_layers": {"type": "array"},
        "device_run": {"type": "object",
                       "required": ["instructions", "layer_instructions", "source"],
                       "properties": {"instructions": _INT, "flash_bytes": _INT,
                                      "ram_bytes": _INT,
                                      "vs_edgekit_runtime": {
                                          "type": "object",
                                          "required": ["identical", "max_abs_error"],
                                          "properties": {"identical": {"type": "boolean"},
                                                         "max_abs_error": _NUM}}}},
        "early_exit": {"type": "object", "required": ["exits", "policy"],
                       "properties": {"exits": {"type": "array", "items": {
                           "type": "object", "required": ["exit", "blocks", "steps", "macs",
                                                          "energy_model_uj", "latency_ms"],
                           "properties": {"macs": _INT, "steps": _INT}}}}},
        "notes": {"type": "array", "items": {"type": "string"}},
    },
}

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
          "number": (int, float), "integer": int}


def validate(doc: Any, schema: dict[str, Any] = SCHEMA, where: str = "$") -> None:
    """Check ``doc`` against the JSON-Schema subset used above (type, enum, required,
    properties, items); raise ``EdgekitError`` naming the first path that does not match."""
    types = schema.get("type")
    if types is not None:
        allowed = [types] if isinstance(types, str) else types
        ok = any(isinstance(doc, _TYPES[t]) and not (t in ("number", "integer")
                                                     and isinstance(doc, bool))
                 for t in allowed)
        if not ok:
            raise EdgekitError(f"{where}: expected {' or '.join(allowed)}, got {doc!r:.60}")
    if "enum" in schema and doc not in schema["enum"]:
        raise EdgekitError(f"{where}: {doc!r} is not one of {schema['enum']}")
    if isinstance(doc, dict):
        for key in schema.get("required", []):
            if key not in doc:
                raise EdgekitError(f"{where}: missing {key!r}")
        for key, sub in schema.get("properties", {}).items():
            if key in doc:
                validate(doc[key], sub, f"{where}.{key}")
    if isinstance(doc, list) and "items" in schema:
        for i, item in enumerate(doc):
            validate(item, schema["items"], f"{where}[{i}]")


@dataclass
class Report:
    """A profile of one model on one target; ``data`` is the JSON document."""

    data: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def save_json(self, path: str | Path) -> Path:
        validate(self.data)
        path = Path(path)
        atomic_write_bytes(path, json.dumps(self.data, indent=1).encode())
        return path

    def plot(self, path: str | Path) -> Path:
        from edgekit.profile.plot import plot_report

        return plot_report(self, path)

    def text(self, per_layer: bool = False) -> str:
        d, t, lat, e = self.data, self.data["totals"], self.data["latency_ms"], self.data["energy"]
        lines = [f"{d['model']} on {d['target']} ({d['device']['name']}: "
                 f"{d['device']['description']})"]
        if per_layer:
            timed = bool(layer_time_label(d))
            lines += ["", table(
                ["#", "layer", "op", "dtype", "MACs", "params", "weight B", "AI", "DI",
                 "energy µJ (model)", *([layer_time_label(d)] if timed else [])],
                [(i, la["name"], la["op"], la["dtype"], la["macs"], la["params"],
                  la["weight_bytes"], la["arithmetic_intensity"],
                  la.get("dtype_aware_intensity", "-"), la["energy_model_uj"],
                  *([layer_time(la["time_ms"])] if timed else []))
                 for i, la in enumerate(d["layers"])])]
        if d.get("backend_layers"):
            lines += ["", "per node, from the backend's own profiler:", table(
                ["node", "op", "p50 ms", "mean ms"],
                [(n["name"], n["op"], n["p50"], n["mean"]) for n in d["backend_layers"]])]
        lines += ["", table(["figure", "value", "what it is"], [
            ("MACs", t["macs"], "multiply-accumulates per inference"),
            ("FLOPs", t["flops"], "2 x MACs"),
            ("params", t["params"], ", ".join(f"{v:,} B {k}"
                                             for k, v in t["weight_bytes_by_dtype"].items())),
            ("peak activations", f"{t['peak_activation_bytes']:,} B",
             f"edgekit runtime's planned arena (naive: {t['naive_activation_bytes']:,} B)"),
            ("arithmetic intensity", t["arithmetic_intensity"], "MACs per element moved"),
            ("data-type-aware int.", t["dtype_aware_intensity"],
             "MACs per energy-weighted element (inferred formula)"),
            *_latency_rows(lat),
            ("energy (model)", f"{e['model_uj_per_inference']:.4g} µJ", e["model_basis"]),
            ("energy (measured)", f"{e['measured_uj_per_inference']:.4g} µJ"
             if e["measured_uj_per_inference"] is not None else "n/a",
             e.get("measured_source") or e["measured_unavailable_reason"]),
            *((f"fits {k}", "yes" if v["fits"] else f"NO (+{v['overshoot_bytes']:,} B)",
               f"{v['needed_bytes']:,} of {v['available_bytes']:,} B "
               f"({'the firmware' if v.get('memory') == 'firmware' else 'edgekit runtime'}'s "
               "memory plan)")
              for k, v in d["fits"].items()),
            *_spiking_rows(d),
            *_device_run_rows(d.get("device_run")),
        ])]
        if "early_exit" in d:
            from edgekit.profile.exits import text

            lines.append(text(d))
        lines += [f"note: {n}" for n in d["notes"]]
        return "\n".join(lines)


def _spiking_rows(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    if "spiking" not in d:
        return []
    s = d["spiking"]
    rates = ", ".join(f"{n['firing_rate']:.3f}" for n in s["neurons"])
    rows = [("time steps", s["timesteps"], f"{s['encoding']} input encoding"),
            ("firing rates", rates, "spikes per neuron per step, by neuron layer"),
            ("synaptic ops", f"{s['synaptic_ops']:,.0f}",
             f"event-driven accumulates per inference (+ {s['first_layer_macs']:,} first-layer "
             "MACs)"),
            ("E_ANN / E_SNN", f"{s['energy_ratio_ann_over_snn']:.3g}",
             f"{s['e_ann_uj']:.4g} / {s['e_snn_uj']:.4g} µJ: {s['basis']}")]
    if "synaptic_ops" in d.get("device_run", {}):
        rows.append(("synaptic ops (board)", f"{d['device_run']['synaptic_ops']:,}",
                     "counted by the firmware on the first input, read over the link"))
    return rows


def _device_run_rows(run: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """What the board itself reported (``device_run``): its instructions, its image, and
    whether its outputs equal edgekit runtime's."""
    if not run:
        return []
    rows = [("instructions", f"{run['instructions']:,}",
             "per inference on the board, summed over its steps (emulated under QEMU: not "
             "measured cycles)")]
    if "ram_bytes" in run:
        rows.append(("firmware image", f"flash {run['flash_bytes']:,} B, RAM "
                     f"{run['ram_bytes']:,} B", "section sizes of the built ELF (RAM: data + "
                     "bss + stack)"))
    if "vs_edgekit_runtime" in run:
        vs = run["vs_edgekit_runtime"]
        rows.append(("outputs vs runtime", "identical" if vs["identical"] else
                     f"differ (max |error| {vs['max_abs_error']:.4g})",
                     "the board's outputs on the profiled input against edgekit's runtime"))
    return rows


def _latency_rows(lat: dict[str, Any]) -> list[tuple[str, str, str]]:
    if lat["source"] == "estimated":
        return [("latency (estimated)", f"{lat['estimate_ms']:.4g} ms",
                 "MACs x cycles per MAC / clock: no device attached")]
    return [(f"latency ({lat['source']})",
             f"p50 {lat['p50']:.4g} / p90 {lat['p90']:.4g} / p99 {lat['p99']:.4g} ms",
             f"min {lat['min']:.4g}, max {lat['max']:.4g}, mean {lat['mean']:.4g} "
             f"± {lat['std']:.2g} ms over {lat['runs']} runs")]


def layer_time(time_ms: dict[str, float] | None) -> float | str:
    """A layer's time in ms: measured p50, or the estimate where it was not measured."""
    if not time_ms:
        return "-"
    return time_ms["p50"] if "p50" in time_ms else time_ms["estimate"]


def layer_time_label(data: dict[str, Any]) -> str:
    """What the layers' times are ("" when there are none)."""
    first = next((la["time_ms"] for la in data["layers"] if la["time_ms"]), None)
    if first is None:
        return ""
    if "p50" in first:
        return f"p50 ms ({data['latency_ms']['source']})"
    if "instructions" in first:
        return "ms (estimated: emulated instructions / clock)"
    return "ms (estimated: MACs x cycles per MAC / clock)"
