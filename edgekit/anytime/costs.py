"""Per-path costs on a device profile, for budgets in latency or energy (numpy only).

A path's latency is the profile's estimate for a device that is not attached (MACs x cycles
per MAC / clock, per layer, as ``edgekit.profile`` estimates it) and its energy the profile's
modelled dynamic energy (``edgekit.profile.energy``), both of the path's plain Graph; they are
stored in the table beside the MACs, with the profile's name.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.anytime.table import extract, table
from edgekit.graph import Graph
from edgekit.profile.counts import describe
from edgekit.profile.devices import DeviceProfile, load_profile
from edgekit.profile.energy import layer_energy_pj


def annotate(graph: Graph, device: str | Path | DeviceProfile) -> Graph:
    """Store every path's modelled ``latency_ms`` and ``energy_uj`` on ``device`` (in place)."""
    dev = load_profile(device)
    for path, entry in table(graph)["paths"].items():
        layers = describe(extract(graph, path), dev)["layers"]
        entry["latency_ms"] = sum(
            la["macs"] * dev.cycles_per_mac["int8" if la["dtype"] == "int8" else "float32"]
            for la in layers) / dev.clock_hz * 1e3
        entry["energy_uj"] = sum(sum(layer_energy_pj(la, dev).values()) for la in layers) / 1e6
    table(graph)["device"] = dev.name
    return graph
