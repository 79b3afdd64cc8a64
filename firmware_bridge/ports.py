"""The emulated boards edgekit's firmware is built for, one per Arm core: which QEMU machine runs
it, which board-support directory (``firmware/boards/<dir>``: startup, UART, linker script) and
compiler flags build it, and which device profile describes it (``targets/profiles``).

The flags select the kernels too: ``-mcpu`` defines ``__ARM_FEATURE_DSP`` (Cortex-M4/M7: the
16-bit SIMD multiply-accumulates) or ``__ARM_FEATURE_MVE`` (Cortex-M55: Helium), which the
firmware's kernels test (``firmware/ek_simd.h``); a core with an FPU is built for it
(``-mfloat-abi=hard``), so float spiking Graphs use it. ``-ffp-contract=off`` everywhere: no
fused multiply-add, so float results stay those of the runtime.

``mcu:qemu:<core>`` picks one (``mcu:qemu`` is the Cortex-M3).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.errors import EdgekitError


@dataclass(frozen=True)
class Port:
    core: str          # the key: "m3", "m4", "m7", "m55"
    machine: str       # qemu-system-arm -M
    board_dir: str     # firmware/boards/<board_dir>
    cflags: tuple[str, ...]
    profile: str       # targets/profiles/<profile>.toml
    description: str


PORTS: dict[str, Port] = {p.core: p for p in [
    Port("m3", "mps2-an385", "mps2", ("-mcpu=cortex-m3", "-mthumb"), "cortex-m3-qemu",
         "Cortex-M3 (ARMv7-M), no FPU, no DSP extension"),
    Port("m4", "mps2-an386", "mps2",
         ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
         "cortex-m4-qemu", "Cortex-M4 (ARMv7E-M): DSP extension (SMLAD), single-precision FPU"),
    Port("m7", "mps2-an500", "mps2",
         ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"),
         "cortex-m7-qemu", "Cortex-M7 (ARMv7E-M): DSP extension (SMLAD), double-precision FPU"),
    Port("m55", "mps3-an547", "mps3_an547",
         ("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard"),
         "cortex-m55-qemu", "Cortex-M55 (ARMv8.1-M): Helium (MVE) integer and float vectors, FPU"),
]}
DEFAULT = "m3"
COMMON_CFLAGS = ("-ffp-contract=off",)


def port(core: str) -> Port:
    """The port of ``core`` ("m3", "m4", "m7", "m55"); an unknown core names the known ones."""
    if core not in PORTS:
        raise EdgekitError(f"no emulated board for core {core!r}; cores: "
                           f"{', '.join(PORTS)} (mcu:qemu:<core>)")
    return PORTS[core]
