"""Device profiles: what a target's hardware offers (clock, SRAM, flash) and what its operations
cost (pJ per MAC, per accumulate, per 64-bit memory access), read from
``targets/profiles/*.toml`` where each figure's source is written beside it.

The ``host`` profile is completed at run time from ``/proc/cpuinfo`` and ``/proc/meminfo``, so a
report names the CPU it really ran on instead of a guess.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError


@dataclass(frozen=True)
class DeviceProfile:
    """One device. ``sram_bytes`` holds activations (plus ``runtime_overhead_bytes``),
    ``flash_bytes`` holds weights; ``energy_pj`` keys are ``mac_<dtype>``, ``add_<dtype>`` and
    ``access_<memory>`` for the memories named by ``weight_memory``/``activation_memory``."""

    name: str
    description: str
    kind: str  # "cpu", "gpu" or "mcu"
    clock_hz: int
    cores: int
    sram_bytes: int
    flash_bytes: int
    runtime_overhead_bytes: int
    weight_memory: str
    activation_memory: str
    cycles_per_mac: dict[str, float]
    energy_pj: dict[str, float]
    sources: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _profile_dir() -> Path:
    return Path(str(resources.files("edgekit.targets").joinpath("profiles")))


def profile_names() -> list[str]:
    return sorted(p.stem for p in _profile_dir().glob("*.toml"))


def load_profile(profile: str | Path | DeviceProfile) -> DeviceProfile:
    """A profile by name (``cortex-m4``), from a ``.toml`` path, or passed through."""
    if isinstance(profile, DeviceProfile):
        return profile
    path = Path(profile)
    if path.suffix != ".toml":
        path = _profile_dir() / f"{profile}.toml"
        if not path.exists():
            raise EdgekitError(f"unknown device profile {str(profile)!r}; known profiles: "
                               f"{', '.join(profile_names())} (or pass a .toml path)")
    try:
        doc = tomllib.loads(path.read_text())
        fields = DeviceProfile.__dataclass_fields__
        prof = DeviceProfile(**{k: v for k, v in doc.items() if k in fields})
    except (OSError, tomllib.TOMLDecodeError, TypeError) as err:
        raise EdgekitError(f"{path}: not a valid device profile ({err})") from None
    return detect_host(prof) if prof.name == "host" else prof


def detect_host(base: DeviceProfile, cpuinfo: str = "/proc/cpuinfo",
                meminfo: str = "/proc/meminfo") -> DeviceProfile:
    """``base`` with this machine's CPU model, core count, clock and memory where readable."""
    updates: dict[str, Any] = {"cores": os.cpu_count() or base.cores}
    try:
        info = dict(line.split(":", 1) for line in Path(cpuinfo).read_text().splitlines()
                    if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        if "model name" in info:
            updates["description"] = f"{info['model name']} ({updates['cores']} cores)"
        if "cpu MHz" in info:
            updates["clock_hz"] = int(float(info["cpu MHz"]) * 1e6)
    except OSError:
        pass
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
                updates.update(sram_bytes=total, flash_bytes=total)
    except (OSError, ValueError, IndexError):
        pass
    return replace(base, **updates)
