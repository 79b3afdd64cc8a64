"""Does a Graph fit a device? Weights must fit in flash, and the activation arena plus the
runtime's own overhead in SRAM. ``profile`` reports every limit; ``deploy`` refuses a Graph that
overshoots one (``require_fit``), naming the limit and by how much, before anything is built.

On a microcontroller profile (``kind = "mcu"``) the figures are the firmware's: what the C
writer (``converters.to_c``, ``to_c_snn``) declares for the Graph, from its own plan
(``footprint``), since the firmware has no column buffers of the host runtime's size and
holds its own link buffers, plus the firmware's own code, state and stack as measured from its
built images on the profile's board (``firmware_bridge.sizes``): the image's flash and RAM,
not a guessed overhead. A Graph the firmware cannot run (a float32 CNN, an op without a
C kernel) is counted with edgekit's runtime arena instead; each limit says which (``memory``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.profile.devices import DeviceProfile, load_profile
from edgekit.spiking import is_spiking

if TYPE_CHECKING:
    from edgekit.converters.to_c import Footprint


@dataclass(frozen=True)
class Limit:
    """One resource of a device: what the Graph needs against what the device has."""

    name: str  # "flash" or "sram"
    needed_bytes: int
    available_bytes: int
    what: str  # what is counted against it
    memory: str = "runtime"  # whose plan: "firmware" (the C writer's) or "runtime" (edgekit's)

    @property
    def fits(self) -> bool:
        return self.needed_bytes <= self.available_bytes

    @property
    def overshoot_bytes(self) -> int:
        return max(0, self.needed_bytes - self.available_bytes)

    def to_json(self) -> dict[str, object]:
        return {"limit": self.name, "needed_bytes": self.needed_bytes,
                "available_bytes": self.available_bytes, "fits": self.fits,
                "overshoot_bytes": self.overshoot_bytes, "counts": self.what,
                "memory": self.memory}

    def message(self) -> str:
        state = (f"exceeds it by {self.overshoot_bytes:,} B" if not self.fits
                 else f"leaves {self.available_bytes - self.needed_bytes:,} B free")
        return (f"{self.name}: {self.what} need {self.needed_bytes:,} B of "
                f"{self.available_bytes:,} B, {state}")


def firmware_board(prof: DeviceProfile) -> str:
    """The core whose firmware runs on ``prof``: the emulated board it describes
    (``firmware_bridge.ports``), else the portable Cortex-M3 build a real board is flashed
    with."""
    from edgekit.firmware_bridge.ports import DEFAULT, PORTS

    return next((p.core for p in PORTS.values() if p.profile == prof.name), DEFAULT)


def firmware_footprint(graph: Graph, profile: str | Path | DeviceProfile | None = None
                       ) -> Footprint:
    """What the image of ``graph``'s firmware takes on ``profile``'s board (the C writer's plan
    and the firmware's measured sizes; ``EdgekitError`` where the firmware cannot run it,
    saying why)."""
    from edgekit.converters import to_c, to_c_snn
    from edgekit.firmware_bridge.ports import DEFAULT

    board = DEFAULT if profile is None else firmware_board(load_profile(profile))
    return (to_c_snn if is_spiking(graph) else to_c).footprint(graph, board)


def check_fit(graph: Graph, profile: str | Path | DeviceProfile,
              peak_activation_bytes: int | None = None, *,
              memory: str | None = None) -> list[Limit]:
    """The flash and SRAM limits of ``profile`` for ``graph``.

    ``memory``: whose plan is counted, ``"firmware"`` (the C writer's; an error where the
    firmware cannot run the Graph) or ``"runtime"`` (edgekit's runtime at batch 1); by default
    the firmware's on a microcontroller profile where it can run the Graph, else the runtime's.
    ``peak_activation_bytes``: the runtime's arena where the caller has it already.
    """
    prof = load_profile(profile)
    if memory not in (None, "firmware", "runtime"):
        raise EdgekitError(f"memory must be 'firmware' or 'runtime', got {memory!r}")
    if memory == "firmware":
        return _firmware_limits(firmware_footprint(graph, prof), prof)
    if memory is None and prof.kind == "mcu":
        try:
            return _firmware_limits(firmware_footprint(graph, prof), prof)
        except EdgekitError:
            pass  # the firmware cannot run it: the runtime's figures, marked as such
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


def _firmware_limits(fp: Footprint, prof: DeviceProfile) -> list[Limit]:
    """The image's flash and RAM (``converters.to_c.Footprint``): the firmware's measured code,
    state and stack in place of the profile's ``runtime_overhead_bytes``."""
    return [
        Limit("flash", fp.flash_bytes, prof.flash_bytes,
              f"weights and constants ({fp.const_bytes:,} B) + the firmware's code, kernels and "
              f"schedule ({fp.code_bytes:,} B)", "firmware"),
        Limit("sram", fp.sram_bytes, prof.sram_bytes,
              f"peak activations ({fp.activation_bytes:,} B) in the firmware's arena + its "
              f"column buffer ({fp.scratch_bytes:,} B) + link buffers ({fp.link_bytes:,} B) + "
              f"the firmware's own state and stack ({fp.firmware_ram_bytes:,} B)", "firmware"),
    ]


def require_fit(graph: Graph, profile: str | Path | DeviceProfile,
                peak_activation_bytes: int | None = None, *,
                memory: str | None = None) -> list[Limit]:
    """``check_fit``, raising ``EdgekitError`` naming every exceeded limit and its overshoot."""
    limits = check_fit(graph, profile, peak_activation_bytes, memory=memory)
    over = [lim for lim in limits if not lim.fits]
    if over:
        name = load_profile(profile).name
        raise EdgekitError(f"the model does not fit {name}: "
                           + "; ".join(lim.message() for lim in over)
                           + ". Quantize it (edgekit convert --quantize int8) or shrink it.")
    return limits
