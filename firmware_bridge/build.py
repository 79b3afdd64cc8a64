"""Build the firmware for one model: ``converters.to_c`` sources + the firmware + a board's
startup, UART and linker script, compiled by ``arm-none-eabi-gcc`` into one ELF, for one of the
cores of ``firmware_bridge.ports`` (its flags select the core's kernels).

Builds are cached by a content hash of everything that goes into them (sources, generated
model, flags), in ``$EDGEKIT_CACHE`` or ``~/.cache/edgekit/firmware``: the same model is
compiled once, and a rebuilt edgekit with changed kernels never reuses a stale image.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.firmware_bridge.ports import COMMON_CFLAGS, DEFAULT, port

FIRMWARE = Path(__file__).parent / "firmware"
CC = "arm-none-eabi-gcc"
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-ffunction-sections", "-fdata-sections",
          "-fno-common"]
LDFLAGS = ["-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections"]


@dataclass(frozen=True)
class Firmware:
    elf: Path
    model_hash: str
    board: str  # the core of firmware_bridge.ports it was built for


def cache_dir() -> Path:
    root = os.environ.get("EDGEKIT_CACHE") or Path.home() / ".cache" / "edgekit"
    path = Path(root) / "firmware"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        path = Path(tempfile.gettempdir()) / "edgekit-firmware"
        path.mkdir(parents=True, exist_ok=True)
    return path


def toolchain_missing() -> str | None:
    """Why the firmware cannot be built here, or None."""
    if shutil.which(CC) is None:
        return (f"{CC} is not installed: apt-get install --no-install-recommends "
                "gcc-arm-none-eabi libnewlib-arm-none-eabi")
    return None


def board_dir(board: str) -> Path:
    """The board-support directory of core ``board`` (startup, UART, ``link.ld``)."""
    return FIRMWARE / "boards" / port(board).board_dir


def _sources(board: str) -> list[Path]:
    return sorted(FIRMWARE.glob("*.c")) + sorted(board_dir(board).glob("*.c"))


def build(model_c: str, model_h: str, model_hash: str, board: str = DEFAULT) -> Firmware:
    """The ELF for this generated model on core ``board`` (``ports.PORTS``), from the cache
    when built before."""
    flags = [*port(board).cflags, *COMMON_CFLAGS]
    why = toolchain_missing()
    if why:
        raise EdgekitError(why)
    # every board file: a port may include another's (mps3_an547 includes mps2's board.c)
    inputs = (_sources(board) + sorted(FIRMWARE.glob("*.h"))
              + sorted((FIRMWARE / "boards").glob("*/*.c")))
    linker = board_dir(board) / "link.ld"
    digest = hashlib.sha256()
    for part in [model_c, model_h, *flags, *CFLAGS, *LDFLAGS]:
        digest.update(part.encode())
    for path in [*inputs, linker]:
        digest.update(str(path.relative_to(FIRMWARE)).encode() + path.read_bytes())
    out = cache_dir() / f"{board}-{digest.hexdigest()[:20]}"
    elf = out / "firmware.elf"
    if not elf.exists():
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            work = Path(tmp)
            (work / "model.c").write_text(model_c)
            (work / "model.h").write_text(model_h)
            cmd = [CC, *flags, *CFLAGS, *LDFLAGS, f"-I{FIRMWARE}", f"-I{work}",
                   "-T", str(linker), *map(str, _sources(board)), str(work / "model.c"),
                   "-lm", "-o", str(work / "firmware.elf")]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise EdgekitError(f"firmware build failed:\n{result.stderr[-4000:]}")
            out.mkdir(exist_ok=True)
            for name in ("model.c", "model.h", "firmware.elf"):
                os.replace(work / name, out / name)
    return Firmware(elf, model_hash, board)
