"""Does a Graph fit a device? Weights must fit in flash, and the activation arena plus the
runtime's own overhead in SRAM. ``profile`` reports every limit; ``deploy`` refuses a Graph that
overshoots one (``require_fit``), naming the limit and by how much, before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.profile.devices import DeviceProfile, load_profile


@dataclass(frozen=True)
class Limit:
    """One resource of a device: what the Graph needs against what the device has."""

    name: str  # "flash" or "sram"
    needed_bytes: int
    available_bytes: int
    what: str  # what is counted against it

    @property
    def fits(self) -> bool:
        return self.needed_bytes <= self.available_bytes

    @property
    def overshoot_bytes(self) -> int:
        return max(0, self.needed_bytes - self.available_bytes)

    def to_json(self) -> dict[str, object]:
        return {"limit": self.name, "needed_bytes": self.needed_bytes,
                "available_bytes": self.available_bytes, "fits": self.fits,
                "overshoot_bytes": self.overshoot_bytes, "counts": self.what}

    def message(self) -> str:
        state = (f"exceeds it by {self.overshoot_bytes:,} B" if not self.fits
                 else f"leaves {self.available_bytes - self.needed_bytes:,} B free")
        return (f"{self.name}: {self.what} need {self.needed_bytes:,} B of "
                f"{self.available_bytes:,} B, {state}")


def check_fit(graph: Graph, profile: str | Path | DeviceProfile,
              peak_activation_bytes: int | None = None) -> list[Limit]:
    """The flash and SRAM limits of ``profile`` for ``graph``.

    ``peak_activation_bytes`` defaults to the arena edgekit's runtime plans at batch 1; a target
    whose runtime plans its own arena (the MCU firmware) passes its figure instead.
    """
    prof = load_profile(profile)
    if peak_activation_bytes is None:
        from edgekit.runtime import Executor

        peak_activation_bytes = Executor(graph).peak_activation_bytes(1)
    weight_bytes = sum(graph.tensors[p].nbytes for p in graph.params)
    return [
        Limit("flash", weight_bytes, prof.flash_bytes, "weights"),
        Limit("sram", peak_activation_bytes + prof.runtime_overhead_bytes, prof.sram_bytes,
              f"peak activations ({peak_activation_bytes:,} B) + runtime overhead "
              f"({prof.runtime_overhead_bytes:,} B)"),
    ]


def require_fit(graph: Graph, profile: str | Path | DeviceProfile,
                peak_activation_bytes: int | None = None) -> list[Limit]:
    """``check_fit``, raising ``EdgekitError`` naming every exceeded limit and its overshoot."""
    limits = check_fit(graph, profile, peak_activation_bytes)
    over = [lim for lim in limits if not lim.fits]
    if over:
        name = load_profile(profile).name
        raise EdgekitError(f"the model does not fit {name}: "
                           + "; ".join(lim.message() for lim in over)
                           + ". Quantize it (edgekit convert --quantize int8) or shrink it.")
    return limits
