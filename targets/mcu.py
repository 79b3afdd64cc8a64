"""``mcu:qemu`` and ``mcu:<port>``: an int8 Graph compiled to C firmware and run on a
microcontroller over the serial link — the emulated Cortex-M3 board (QEMU mps2-an385), or a
real board on a port such as ``/dev/ttyACM0`` flashed with the same firmware.

The Session speaks to the firmware through ``firmware_bridge`` and otherwise behaves like every
peer Session (``PeerSession``: names, shapes, the int8 edge conversion). Each inference also
reports the board's tick count per step; under QEMU's ``-icount shift=3`` the ticks are
emulated instruction counts (5 instructions per 25 MHz tick), repeatable run to run, not
measured cycles. No torch here: this side runs where only the board's host does.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.targets._peer import PeerSession
from edgekit.targets.base import Target

PROFILE = "cortex-m3-qemu"


def elf_sizes(elf: str | Path) -> dict[str, int]:
    """Flash (text + rodata + data initialisers) and RAM (data + bss + stack) of an ELF."""
    from edgekit.firmware_bridge.build import CC

    size_tool = CC.replace("gcc", "size")
    out = subprocess.run([size_tool, "-A", str(elf)], capture_output=True, text=True, check=True)
    sections = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit():
            sections[parts[0]] = int(parts[1])
    flash = sections.get(".text", 0) + sections.get(".ARM.exidx", 0) + sections.get(".data", 0)
    ram = sections.get(".data", 0) + sections.get(".bss", 0) + sections.get(".stack", 0)
    return {"flash_bytes": flash, "ram_bytes": ram, "stack_bytes": sections.get(".stack", 0)}


class McuSession(PeerSession):
    """A Graph running on a board; ``last_ticks`` holds the last inference's per-step ticks."""

    def __init__(self, graph: Graph, board: Any, firmware: Any | None):
        super().__init__(graph)
        self.board, self.firmware = board, firmware
        self.hello = board.hello
        self.last_ticks: list[int] = []
        self.notes.append(f"firmware {self.hello.firmware}, model {self.hello.model_hash}, "
                          f"arena {self.hello.arena_bytes} B")

    def _sample_bytes(self, feeds: list[np.ndarray], b: int) -> bytes:
        return b"".join(np.ascontiguousarray(x[b]).tobytes() for x in feeds)

    def _run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        from edgekit.firmware_bridge.protocol import Cmd, parse_infer

        outs: list[list[np.ndarray]] = [[] for _ in self.graph.outputs]
        for b in range(feeds[0].shape[0]):
            reply = self.board.link.request(Cmd.INFER, self._sample_bytes(feeds, b))
            _, self.last_ticks, data = parse_infer(reply, self.hello.steps)
            offset = 0
            for i, name in enumerate(self.graph.outputs):
                info = self.graph.tensors[name]
                n = int(np.prod(info.shape[1:]))
                outs[i].append(np.frombuffer(data[offset:offset + n], np.int8)
                               .reshape(1, *info.shape[1:]))
                offset += n
        return [np.concatenate(o) for o in outs]

    def _run_layers(self, feeds: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Every step's output through INFER_LAYERS (the board runs the schedule up to it)."""
        from edgekit.firmware_bridge.protocol import Cmd

        result: dict[str, list[np.ndarray]] = {n.outputs[0]: [] for n in self.graph.nodes}
        for b in range(feeds[0].shape[0]):
            sample = self._sample_bytes(feeds, b)
            for step, node in enumerate(self.graph.nodes):
                reply = self.board.link.request(Cmd.INFER_LAYERS,
                                                struct.pack("<H", step) + sample)
                info = self.graph.tensors[node.outputs[0]]
                result[node.outputs[0]].append(
                    np.frombuffer(reply[2:], np.int8).reshape(1, *info.shape[1:]))
        return {k: np.concatenate(v) for k, v in result.items()}

    def instructions(self, ticks: int) -> int:
        """Emulated instructions in ``ticks`` (QEMU -icount: 2^shift ns per instruction)."""
        from edgekit.firmware_bridge.board import ICOUNT_SHIFT

        return round(ticks * 1e9 / self.hello.tick_hz / (1 << ICOUNT_SHIFT))

    def device_profile(self, inputs: Any) -> dict[str, Any]:
        """Flash/RAM of the image and per-layer instruction counts for one inference."""
        self.run(inputs[:1] if isinstance(inputs, np.ndarray) else inputs)
        per_step = [self.instructions(t) for t in self.last_ticks]
        report: dict[str, Any] = {"instructions": sum(per_step), "layer_instructions": per_step,
                                  "source": "QEMU -icount shift=3 emulated instruction counts, "
                                            "not measured cycles"}
        if self.firmware is not None:
            report.update(elf_sizes(self.firmware.elf))
        return report

    def close(self) -> None:
        if self.board is not None:
            self.board.stop()
            self.board = None


class McuTarget(Target):
    """``mcu:qemu`` (builds the firmware and starts the emulated board) or ``mcu:<port>``."""

    profile = PROFILE

    def __init__(self, port: str = "qemu"):
        self.port = port
        self.name = f"mcu:{port}"

    def available(self) -> tuple[bool, str]:
        from edgekit.firmware_bridge.board import qemu_missing
        from edgekit.firmware_bridge.build import toolchain_missing

        why = [w for w in (toolchain_missing(), qemu_missing() if self.port == "qemu" else None)
               if w]
        return (not why, "; ".join(why))

    def compile(self, graph: Graph, **options: Any) -> McuSession:
        """Options: ``profile`` (a device profile to check the fit against, before building),
        ``timeout`` and ``retries`` of the link."""
        from edgekit.converters.to_c import check_supported, generate, memory_plan
        from edgekit.firmware_bridge.board import QemuBoard, SerialBoard
        from edgekit.firmware_bridge.build import build
        from edgekit.profile.fit import require_fit

        profile = options.pop("profile", PROFILE)
        link = {k: options.pop(k) for k in ("timeout", "retries") if k in options}
        if options:
            raise EdgekitError(f"target {self.name!r} takes no option(s) {sorted(options)}")
        check_supported(graph)
        require_fit(graph, profile, memory_plan(graph)[0].size)
        firmware = build(*generate(graph))
        if self.port == "qemu":
            board = QemuBoard(firmware.elf, **link)
        else:
            board = SerialBoard(self.port, **{k: v for k, v in link.items() if k == "timeout"})
            if board.hello.model_hash != firmware.model_hash:
                board.stop()
                raise EdgekitError(f"the board on {self.port} runs model "
                                   f"{board.hello.model_hash}, not this one "
                                   f"({firmware.model_hash}): flash {firmware.elf} first "
                                   "(README, 'Microcontrollers')")
        return McuSession(graph, board, firmware)
