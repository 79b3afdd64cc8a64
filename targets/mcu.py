"""``mcu:qemu`` and ``mcu:<port>``: an int8 Graph, or a spiking Graph (``converters.snn``,
float32 or quantized to int8 by ``edgekit.quantize``), compiled to C firmware and run on a
microcontroller over the serial link — an emulated board (``mcu:qemu`` the Cortex-M3, QEMU
mps2-an385; ``mcu:qemu:m4``, ``:m7``, ``:m55`` the Cortex-M4, M7 and M55 boards of
``firmware_bridge.ports``, each built with its core's kernels), or a real board on a port such as
``/dev/ttyACM0`` flashed with the same firmware.

The Session speaks to the firmware through ``firmware_bridge`` and otherwise behaves like every
peer Session (``PeerSession``: names, shapes, the int8 edge conversion; a float32 spiking
Graph exchanges its float32 tensors as they are, an int8 one its int8 input and the int32 sums
of its output over the time steps, which the edge divides by T and dequantizes). Each
inference also reports the board's tick count per step; under QEMU's ``-icount shift=3`` the
ticks are emulated instruction counts (5 instructions per 25 MHz tick), repeatable run to run,
not measured cycles. A spiking model runs its whole time loop as one step and keeps its
synaptic operations and per-node ticks for STATS. No torch here: this side runs where only the
board's host does.

Tensors longer than a frame stream in chunks (``firmware_bridge.stream``), so the board's
memory, not the link, limits the model. How long an inference may take before the link gives
up (``compute_timeout``) comes from the model's expected cost on the board
(``expected_seconds``, with a margin), or from the ``timeout`` option.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.spiking import is_spiking
from edgekit.targets._peer import PeerSession
from edgekit.targets.base import Target

# Emulated instructions QEMU runs per second of host time under -icount shift=3: measured 230 M
# (a 16-channel 64x64 int8 convolution, 10.9 M instructions in 0.047 s, on a shared 2-core
# host); taken lower for slower or loaded hosts, and TIMEOUT_MARGIN on top. A real board runs
# its profile's clock_hz, one instruction per cycle.
EMULATED_IPS = 100e6
TIMEOUT_MARGIN = 4.0
LINK_TIMEOUT = 2.0  # the link's own reply timeout: requests that compute nothing, the ACK
INSTRUCTIONS_PER_ELEMENT = 10  # per output element: the cost of an op without MACs


def expected_seconds(graph: Graph, profile: Any, emulated: bool) -> float:
    """Seconds one inference is expected to take on the board: the model's MACs at the device
    profile's cycles per MAC (its int8 or float32 figure; times T for a spiking model) plus
    ``INSTRUCTIONS_PER_ELEMENT`` per output element, one instruction per cycle, at the
    emulator's speed (``EMULATED_IPS``) or the profile's clock."""
    from edgekit.profile.devices import load_profile

    device = load_profile(profile)
    dtype = "int8" if graph.metadata.get("quantized") == "int8" else "float32"
    macs = sum(graph.node_macs(n) for n in graph.nodes)
    elements = sum(math.prod(graph.tensors[n.outputs[0]].shape[1:]) for n in graph.nodes)
    steps = int(graph.metadata.get("timesteps", 1))
    instructions = steps * (macs * device.cycles_per_mac[dtype]
                            + elements * INSTRUCTIONS_PER_ELEMENT)
    return instructions / (EMULATED_IPS if emulated else device.clock_hz)


def elf_sizes(elf: str | Path) -> dict[str, int]:
    """Flash (text + rodata + data initialisers) and RAM (data + bss + stack) of an ELF: what
    the fit check's measured firmware sizes read too (``firmware_bridge.sizes``)."""
    from edgekit.firmware_bridge.sizes import elf_sections

    return elf_sections(elf)


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
        outs: list[list[np.ndarray]] = [[] for _ in self.graph.outputs]
        for b in range(feeds[0].shape[0]):
            _, self.last_ticks, data = self._infer(self._sample_bytes(feeds, b))
            offset = 0
            for i, name in enumerate(self.graph.outputs):
                info = self.graph.tensors[name]
                n = int(np.prod(info.shape[1:])) * self.dtype.itemsize
                outs[i].append(np.frombuffer(data[offset:offset + n], self.dtype)
                               .reshape(1, *info.shape[1:]))
                offset += n
        return [np.concatenate(o) for o in outs]

    def _infer(self, sample: bytes) -> tuple[int, list[int], bytes]:
        """One sample's inference on the board: (total ticks, ticks per step, output bytes)
        (an anytime model's session sends its path: ``anytime.board``)."""
        from edgekit.firmware_bridge import stream

        return stream.infer(self.board.link, sample)

    def _run_layers(self, feeds: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Every step's output through INFER_LAYERS (the board runs the schedule up to it)."""
        from edgekit.firmware_bridge import stream

        if self.spiking:
            raise EdgekitError("a spiking Graph runs its whole time loop as one step on the "
                               "board: no per-layer outputs (compare them on the cpu target)")
        result: dict[str, list[np.ndarray]] = {n.outputs[0]: [] for n in self.graph.nodes}
        for b in range(feeds[0].shape[0]):
            sample = self._sample_bytes(feeds, b)
            for step, node in enumerate(self.graph.nodes):
                shape = self.graph.tensors[node.outputs[0]].shape[1:]
                data = stream.infer_layer(self.board.link, step, sample, math.prod(shape))
                result[node.outputs[0]].append(np.frombuffer(data, np.int8).reshape(1, *shape))
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
    """``mcu:qemu[:<core>]`` (builds the firmware for the core and starts its emulated board)
    or ``mcu:<port>`` (a real board, built for the Cortex-M3's portable kernels)."""

    def __init__(self, port: str = "qemu"):
        from edgekit.firmware_bridge.ports import DEFAULT
        from edgekit.firmware_bridge.ports import port as core_port

        self.name = f"mcu:{port}"
        self.core = DEFAULT
        if port.startswith("qemu:"):
            port, self.core = "qemu", port[5:]
        self.port = port
        self.profile = core_port(self.core).profile

    def available(self) -> tuple[bool, str]:
        from edgekit.firmware_bridge.board import qemu_missing
        from edgekit.firmware_bridge.build import toolchain_missing

        why = [w for w in (toolchain_missing(), qemu_missing() if self.port == "qemu" else None)
               if w]
        return (not why, "; ".join(why))

    def compile(self, graph: Graph, **options: Any) -> McuSession:
        """Options: ``profile`` (a device profile to check the fit against, before building),
        ``timeout`` (seconds an inference may take on the board; default: its expected time,
        ``expected_seconds``, times ``TIMEOUT_MARGIN`` plus the link's own ``LINK_TIMEOUT``)
        and ``retries`` of the link. A Graph with ``metadata["timesteps"]`` is a spiking one
        and goes to ``converters.to_c_snn``, every other to ``converters.to_c``."""
        from edgekit.converters import to_c, to_c_snn
        from edgekit.firmware_bridge.board import QemuBoard, SerialBoard
        from edgekit.firmware_bridge.build import build
        from edgekit.firmware_bridge.protocol import check_protocol
        from edgekit.profile.fit import require_fit

        profile = options.pop("profile", self.profile)
        timeout = options.pop("timeout", None)
        retries = options.pop("retries", 8)
        if options:
            raise EdgekitError(f"target {self.name!r} takes no option(s) {sorted(options)}")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(
                timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0):
            raise EdgekitError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        writer = to_c_snn if is_spiking(graph) else to_c
        writer.check_supported(graph)
        require_fit(graph, profile, memory="firmware")  # what the C writer declares
        firmware = build(*writer.generate(graph), board=self.core)
        expected = expected_seconds(graph, profile, emulated=self.port == "qemu")
        link = {"timeout": LINK_TIMEOUT, "retries": retries, "compute_timeout":
                timeout if timeout is not None else LINK_TIMEOUT + TIMEOUT_MARGIN * expected}
        if self.port == "qemu":
            board = QemuBoard(firmware.elf, board=self.core, **link)
        else:
            board = SerialBoard(self.port, **link)
        board.link.expected_s = expected
        try:
            check_protocol(board.hello)
        except EdgekitError:
            board.stop()
            raise
        if self.port != "qemu" and board.hello.model_hash != firmware.model_hash:
            board.stop()
            raise EdgekitError(f"the board on {self.port} runs model {board.hello.model_hash}, "
                               f"not this one ({firmware.model_hash}): flash {firmware.elf} "
                               "first (README, 'Microcontrollers')")
        if "anytime" in graph.metadata:  # run(x, budget=...) runs one path of the image
            from edgekit.anytime.board import AnytimeMcuSession

            return AnytimeMcuSession(graph, board, firmware)
        return McuSession(graph, board, firmware)
