"""Energy per inference, two figures that are never substituted for each other:

- ``model``: operation counts x the device profile's energy table (Horowitz, ISSCC 2014, 45 nm;
  see each ``targets/profiles/*.toml``): MACs and accumulates at their dtype's cost, every
  weight byte fetched once from the weight memory, every activation byte read or written once
  in the activation memory. It leaves out static power and control, so it is a floor.
- ``measured``: an energy counter read around the timed runs — RAPL
  (``/sys/class/powercap/intel-rapl*``, the CPU package: the whole socket, other processes
  included) on a CPU, NVML's total-energy counter on an NVIDIA GPU. Where no counter is
  readable the report carries the reason instead of a number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.profile.devices import DeviceProfile

RAPL_ROOT = Path("/sys/class/powercap")


def layer_energy_pj(layer: dict[str, Any], device: DeviceProfile) -> dict[str, float]:
    """Modelled pJ of one layer (from ``counts.layer_counts``), split by where it goes."""
    e = device.energy_pj
    dtype = "int8" if layer["dtype"] == "int8" else "float32"
    return {
        "compute": layer["macs"] * e[f"mac_{dtype}"] + layer["accumulates"] * e[f"add_{dtype}"],
        "weights": layer["weight_bytes"] / 8 * e[f"access_{device.weight_memory}"],
        "activations": (layer["input_bytes"] + layer["output_bytes"]) / 8
        * e[f"access_{device.activation_memory}"],
    }


class EnergyMeter:
    """A hardware energy counter: ``start()``, then ``stop()`` gives joules since start.
    ``available`` is False with ``reason`` set where nothing can be read."""

    available = False
    reason = ""
    source = ""

    def start(self) -> None:
        """Remember the counter's value."""

    def stop(self) -> float:
        """Joules since ``start``."""
        raise NotImplementedError


class RaplMeter(EnergyMeter):
    """The package domains of RAPL (``intel-rapl:N``, also exposed on AMD Zen), summed over
    sockets, with the counter's wrap-around handled."""

    source = "RAPL package energy (whole CPU socket, all processes)"

    def __init__(self, root: Path = RAPL_ROOT):
        self.domains = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)
        if not root.exists() or not self.domains:
            self.reason = (f"no RAPL domains under {root}/intel-rapl* on this machine (virtual "
                           "machine, container without /sys/class/powercap, or no RAPL driver)")
            return
        try:
            self._read()
        except OSError as err:
            self.reason = (f"RAPL counters exist but cannot be read ({err.strerror}); since "
                           "Linux 5.10 energy_uj is root-only: run as root or chmod o+r "
                           f"{self.domains[0]}/energy_uj")
            return
        self.available = True

    def _read(self) -> list[int]:
        return [int((d / "energy_uj").read_text()) for d in self.domains]

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> float:
        total = 0
        for d, before, after in zip(self.domains, self._start, self._read(), strict=True):
            if after < before:
                after += int((d / "max_energy_range_uj").read_text())
            total += after - before
        return total / 1e6


class NvmlMeter(EnergyMeter):
    """GPU 0's total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, millijoules since
    the driver loaded; Volta and newer) through ``pynvml`` (package ``nvidia-ml-py``)."""

    source = "NVML total energy of GPU 0 (whole board, all processes on it)"

    def __init__(self, index: int = 0):
        try:
            import pynvml
        except ImportError:
            self.reason = "pynvml is not installed: pip install nvidia-ml-py"
            return
        try:
            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._read = lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            self._read()
        except pynvml.NVMLError as err:
            self.reason = f"NVML cannot read GPU {index}'s energy counter: {err}"
            return
        self.available = True

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> float:
        return (self._read() - self._start) / 1e3


def meter_for(target: str) -> EnergyMeter:
    """The counter that covers where ``target`` computes; an MCU is measured by no host
    counter (its board would need a power monitor), so it gets none, with that reason."""
    if target.startswith("gpu"):
        return NvmlMeter()
    if target.startswith("cpu"):
        return RaplMeter()
    meter = EnergyMeter()
    meter.reason = (f"target {target!r} computes off the host: no host energy counter covers it "
                    "(a board-side power monitor would)")
    return meter
