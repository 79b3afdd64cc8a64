"""``mcu:qemu`` and ``mcu:<port>``: an int8 Graph, or a spiking Graph (``converters.snn``,
float32 or quantized to int8 by ``edgekit.quantize``), compiled to C firmware and run on a
microcontroller over the serial link — the emulated Cortex-M3 board (QEMU mps2-an385), or a real
board on a port such as ``/dev/ttyACM0`` flashed with the same firmware.

The Session speaks to the firmware through ``firmware_bridge`` and otherwise behaves like every
peer Session (``PeerSession``: names, shapes, the int8 edge conversion; a float32 spiking
Graph exchanges its float32 tensors as they are, an int8 one its int8 input and the int32 sums
of its output over the time steps, which the edge divides by T and dequantizes). Each
inference also reports the board's tick count per step; under QEMU's ``-icount shift=3`` the
ticks are emulated instruction counts (5 instructions per 25 MHz tick), repeatable run to run,
not measured cycles. A spiking model runs its whole time loop as one step and keeps its
synaptic operations and per-node ticks for STATS. No torch here: this side runs where only the
board's host does.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.spiking import is_spiking
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
        self.spiking = is_spiking(graph)
        # what the board returns: int8 outputs, float32 ones, or an int8 spiking Graph's int32
        # sums over its time steps (the edge divides them by T and dequantizes)
        self.dtype = np.dtype("<i4" if self.int8 and self.spiking else
                              np.int8 if self.int8 else "<f4")
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
                n = int(np.prod(info.shape[1:])) * self.dtype.itemsize
                outs[i].append(np.frombuffer(data[offset:offset + n], self.dtype)
                               .reshape(1, *info.shape[1:]))
                offset += n
        return [np.concatenate(o) for o in outs]

    def _run_layers(self, feeds: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Every step's output through INFER_LAYERS (the board runs the schedule up to it)."""
        from edgekit.firmware_bridge.protocol import Cmd

        if self.spiking:
            raise EdgekitError("a spiking Graph runs its whole time loop as one step on the "
                               "board: no per-layer outputs (compare them on the cpu target)")
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

    def stats(self) -> dict[str, Any]:
        """What a spiking model counted in its last inference (STATS): its synaptic operations
        (the runtime's count) and each node's ticks over the T time steps."""
        from edgekit.firmware_bridge.protocol import Cmd, parse_stats

        if not self.spiking:
            raise EdgekitError("only a spiking Graph's firmware counts synaptic operations")
        counters = parse_stats(self.board.link.request(Cmd.STATS))
        return {"synaptic_ops": counters[0], "layer_ticks": counters[1:]}

    def device_profile(self, inputs: Any) -> dict[str, Any]:
        """Flash/RAM of the image and per-layer instruction counts for one inference (and a
        spiking model's synaptic operations)."""
        self.run(inputs[:1] if isinstance(inputs, np.ndarray) else inputs)
        per_step = [self.instructions(t) for t in self.last_ticks]
        report: dict[str, Any] = {"instructions": sum(per_step), "layer_instructions": per_step,
                                  "source": "QEMU -icount shift=3 emulated instruction counts, "
                                            "not measured cycles"}
        if self.spiking:  # per node over the T steps; the total adds the loop's own work
            stats = self.stats()
            report.update(layer_instructions=[self.instructions(t)
                                              for t in stats["layer_ticks"]],
                          synaptic_ops=stats["synaptic_ops"])
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
        ``timeout`` and ``retries`` of the link. A Graph with ``metadata["timesteps"]`` is a
        spiking one and goes to ``converters.to_c_snn``, every other to ``converters.to_c``."""
        from edgekit.converters import to_c, to_c_snn
        from edgekit.firmware_bridge.board import QemuBoard, SerialBoard
        from edgekit.firmware_bridge.build import build
        from edgekit.profile.fit import require_fit

        profile = options.pop("profile", PROFILE)
        link = {k: options.pop(k) for k in ("timeout", "retries") if k in options}
        if options:
            raise EdgekitError(f"target {self.name!r} takes no option(s) {sorted(options)}")
        writer = to_c_snn if is_spiking(graph) else to_c
        writer.check_supported(graph)
        require_fit(graph, profile, memory="firmware")  # what the C writer declares
        firmware = build(*writer.generate(graph))
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
