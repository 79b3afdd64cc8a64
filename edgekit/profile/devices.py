"""Device profiles: what a target's hardware offers (clock, SRAM, flash) and what its operations
cost (pJ per MAC, per accumulate, per 64-bit memory access), read from
``targets/profiles/*.toml`` where each figure's source is written beside it.

The ``host`` profile is completed at run time from ``/proc/cpuinfo`` and ``/proc/meminfo``, so a
report names the CPU it really ran on instead of a guess.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import MISSING, dataclass, field, replace
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
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise EdgekitError(f"{path}: cannot read the device profile ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise EdgekitError(f"{path}: a device profile is UTF-8 text; byte "
                           f"{err.object[err.start]:#04x} at offset {err.start} is not") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise EdgekitError(f"{path}: not valid TOML ({err})") from None
    prof = DeviceProfile(**_checked(doc, path))
    return detect_host(prof) if prof.name == "host" else prof


KINDS = ("cpu", "gpu", "mcu")
# the integer fields and their least valid value: a zero clock divides latency estimates by
# zero, zero memory makes every fit check fail for a reason the user cannot see
_COUNTS = {"clock_hz": 1, "cores": 1, "sram_bytes": 1, "flash_bytes": 1,
           "runtime_overhead_bytes": 0}
_TEXTS = ("name", "description", "kind", "weight_memory", "activation_memory")


def _checked(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    """The fields of ``DeviceProfile`` from a parsed ``.toml``, each of its type and range, and
    every table entry the profiler looks up present; otherwise one error naming the file and
    the key (a profile read without these checks fails later in a division or a KeyError, or
    gives negative energies). Keys edgekit does not know are ignored."""

    def fail(key: str, why: str) -> EdgekitError:
        return EdgekitError(f"{path}: device profile key {key!r} {why}")

    fields = DeviceProfile.__dataclass_fields__
    missing = [k for k, f in fields.items() if k not in doc and f.default_factory is MISSING]
    if missing:
        raise fail(missing[0], f"is missing (a profile sets {', '.join(missing)})")
    for key in _TEXTS:
        if not isinstance(doc[key], str) or not doc[key]:
            raise fail(key, f"must be a non-empty string, got {doc[key]!r}")
    if doc["kind"] not in KINDS:
        raise fail("kind", f"must be one of {', '.join(KINDS)}, got {doc['kind']!r}")
    for key, least in _COUNTS.items():
        if type(doc[key]) is not int or doc[key] < least:
            raise fail(key, f"must be an integer >= {least}, got {doc[key]!r}")
    memories = (doc["weight_memory"], doc["activation_memory"])
    needed = {"cycles_per_mac": ["float32", "int8"],
              "energy_pj": [f"{op}_{dtype}" for op in ("mac", "add")
                            for dtype in ("float32", "int8")]
              + [f"access_{m}" for m in dict.fromkeys(memories)]}
    for table, keys in needed.items():
        values = doc[table]
        if not isinstance(values, dict):
            raise fail(table, f"must be a table ([{table}]), got {values!r}")
        absent = [k for k in keys if k not in values]
        if absent:
            raise fail(f"{table}.{absent[0]}", "is missing")
        for key, value in values.items():
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value < 0):
                raise fail(f"{table}.{key}", f"must be a finite number >= 0, got {value!r}")
    sources = doc.get("sources", {})
    if not isinstance(sources, dict) or not all(isinstance(v, str) for v in sources.values()):
        raise fail("sources", "must be a table of strings")
    return {k: doc[k] for k in fields if k in doc}


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
