"""``EarlyExit`` on a microcontroller: one firmware image holds the whole int8 multi-exit model
and evaluates the policy itself after each exit's head (``converters.to_c_exits``); the host
sends the features and reads back which exit the board stopped at, that exit's log-posteriors
and the instructions it took. Nothing is decided on the host: the board's exit is the answer.

One image per policy (the policy's table and threshold are compiled in; builds are cached).
With ``frontend`` the host sends the audio itself and the board computes the log-mels too
(``transcribe_audio``; float, best on a core with an FPU: ``mcu:qemu:m4``, ``m7``, ``m55``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.speech.ctc import greedy
from edgekit.speech.exits import Policy, Result, exits_of


class BoardExit:
    def __init__(self, graph: Graph, target: str, timeout: float | None = None,
                 frontend: bool = False):
        from edgekit.converters.to_c import check_supported
        from edgekit.targets.mcu import McuTarget

        if not target.startswith("mcu:"):
            raise EdgekitError(f"{target!r} is not a microcontroller target (mcu:qemu[:core])")
        check_supported(graph)  # int8, every op on the firmware
        self.graph, self.exits = graph, exits_of(graph)
        self.mcu = McuTarget(target[4:])
        ok, why = self.mcu.available()
        if not ok:
            raise EdgekitError(f"target {target} is not available here: {why}")
        self.timeout, self.frontend = timeout, frontend
        self.boards: dict[str, Any] = {}  # str(policy) -> the board running its image

    def transcribe(self, features: np.ndarray, policy: Policy) -> Result:
        """One utterance's (MELS, FRAMES) features, computed on the host."""
        from edgekit.quant.edge import graph_feeds

        if self.frontend:
            raise EdgekitError("this board computes the features itself: transcribe_audio")
        x = graph_feeds(self.graph, np.ascontiguousarray(features[None], np.float32))
        return self._infer(policy, next(iter(x.values())).tobytes())

    def transcribe_audio(self, audio: np.ndarray, policy: Policy) -> Result:
        """One clip's 16 kHz samples in [-1, 1]: the board computes the log-mels itself."""
        import struct

        from edgekit.speech import frontend

        if not self.frontend:
            raise EdgekitError("this board takes features: make it with frontend=True")
        frontend.features(audio)  # refuses a clip longer than the window, as the host does
        pcm = np.clip(np.round(np.asarray(audio, np.float64) * 32768), -32768, 32767)
        padded = np.zeros(frontend.MAX_SAMPLES, "<i2")
        padded[:len(pcm)] = pcm
        return self._infer(policy, struct.pack("<I", len(pcm)) + padded.tobytes())

    def _infer(self, policy: Policy, sample: bytes) -> Result:
        from edgekit.firmware_bridge import stream
        from edgekit.quant.edge import dequantizer

        board = self._board(policy)
        total, _, data = stream.infer(board.link, sample)
        k = data[0]
        if not 1 <= k <= len(self.exits):
            raise EdgekitError(f"the board answered exit {k}; the model has "
                               f"{len(self.exits)}")
        ex = self.exits[k - 1]
        info = self.graph.tensors[ex.output]
        lp = dequantizer(info.quant)(np.frombuffer(data[1:], np.int8).reshape(info.shape[1:]))
        self.last_log_probs = lp  # the accepted exit's, as the board computed them
        return Result(greedy(lp), k, ex.blocks, ex.macs, self._instructions(board, total))

    def _board(self, policy: Policy):
        """The board running ``policy``'s image: built and started on first use."""
        from edgekit.converters import to_c_exits
        from edgekit.firmware_bridge.board import QemuBoard, SerialBoard
        from edgekit.firmware_bridge.build import build
        from edgekit.firmware_bridge.protocol import check_protocol
        from edgekit.profile.fit import require_fit
        from edgekit.targets.mcu import LINK_TIMEOUT, TIMEOUT_MARGIN, expected_seconds

        key = str(policy)
        if key in self.boards:
            return self.boards[key]
        require_fit(self.graph, self.mcu.profile, memory="firmware")
        firmware = build(*to_c_exits.generate(self.graph, policy, self.frontend),
                         board=self.mcu.core)
        qemu = self.mcu.port == "qemu"
        expected = expected_seconds(self.graph, self.mcu.profile, emulated=qemu)
        link = {"timeout": LINK_TIMEOUT, "compute_timeout": self.timeout
                or LINK_TIMEOUT + TIMEOUT_MARGIN * expected}
        board = (QemuBoard(firmware.elf, board=self.mcu.core, **link) if qemu
                 else SerialBoard(self.mcu.port, **link))
        self.boards[key] = board
        check_protocol(board.hello)
        if board.hello.model_hash != firmware.model_hash:
            raise EdgekitError(f"the board on {self.mcu.port} runs model "
                               f"{board.hello.model_hash}, not this one with policy {key} "
                               f"({firmware.model_hash}): flash {firmware.elf} first")
        return board

    @staticmethod
    def _instructions(board, ticks: int) -> int | None:
        """Emulated instructions in ``ticks`` (QEMU -icount); None on a real board."""
        from edgekit.firmware_bridge.board import ICOUNT_SHIFT, QemuBoard

        if not isinstance(board, QemuBoard):
            return None
        return round(ticks * 1e9 / board.hello.tick_hz / (1 << ICOUNT_SHIFT))

    def close(self) -> None:
        for board in self.boards.values():
            board.stop()
        self.boards.clear()
