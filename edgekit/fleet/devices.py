"""Devices of different sizes: how many of a model's layers a device can train, from the
training-memory accounting of ``edgekit.learn.memory`` against its profile's SRAM.

Local rules make partial training natural: the last N blocks train, the ones before run
forward only. A device whose SRAM cannot hold full training trains the most trailing blocks
that fit (down to the head alone), and reports which; the server then weighs each layer by the
clients that trained it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.learn import memory_for
from edgekit.learn.blocks import from_graph
from edgekit.profile.devices import DeviceProfile, load_profile


@dataclass(frozen=True)
class Plan:
    """What one device trains: the last ``layers`` of ``total`` blocks, whose weights are
    ``names``, needing ``sram`` bytes of its ``capacity``."""

    profile: str
    layers: int
    total: int
    names: tuple[str, ...]
    sram: int
    capacity: int
    memory: dict[str, Any]


def sram_needed(memory: dict[str, Any], device: DeviceProfile) -> int:
    """Training bytes that must sit in SRAM: all of them, except frozen weights on a device
    whose weights live in flash (trainable weights change, so they move to SRAM)."""
    frozen = memory["weights"] - memory["gradients"] if device.weight_memory == "flash" else 0
    return memory["total"] - max(frozen, 0) + device.runtime_overhead_bytes


def plan(graph: Graph, rule: str, profile: str | DeviceProfile = "host",
         batch_size: int = 32) -> Plan:
    """The most trailing blocks ``rule`` can train within the device's SRAM."""
    device = load_profile(profile)
    blocks = from_graph(graph)
    total = len(blocks)
    need = 0
    for layers in range(total, 0, -1):
        memory = memory_for(graph, rule, batch_size, "all" if layers == total else layers)
        need = sram_needed(memory, device)
        if need <= device.sram_bytes:
            names = tuple(n for b in blocks[total - layers:] for n in (b.weight_name, b.bias_name)
                          if n)
            return Plan(device.name, layers, total, names, need, device.sram_bytes, memory)
    raise EdgekitError(f"{device.name}: training even the last layer with {rule} at batch "
                       f"{batch_size} needs {need:,} B of SRAM, the device has "
                       f"{device.sram_bytes:,} B; use a smaller batch or model")
