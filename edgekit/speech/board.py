"""``EarlyExit`` on a microcontroller: one firmware image holds the whole int8 multi-exit model
and evaluates the policy itself after each exit's head (``converters.to_c_exits``); the host
sends the features and reads back which exit the board stopped at, that exit's log-posteriors
and the instructions it took. Nothing is decided on the host: the board's exit is the answer.

One image per policy (the policy's table and threshold are compiled in; builds are cached).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.speech.ctc import greedy
from edgekit.speech.exits import Policy, Result, exits_of


class BoardExit:
    def __init__(self, graph: Graph, target: str, timeout: float | None = None):
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
        self.timeout = timeout
        self.boards: dict[str, Any] = {}  # str(policy) -> the board running its image

    def transcribe(self, features: np.ndarray, policy: Policy) -> Result:
        from edgekit.firmware_bridge import stream
        from edgekit.quant.edge import dequantizer, graph_feeds

        board = self._board(policy)
        x = graph_feeds(self.graph, np.ascontiguousarray(features[None], np.float32))
        total, _, data = stream.infer(board.link, next(iter(x.values())).tobytes())
        k = data[0]
        if not 1 <= k <= len(self.exits):
            raise EdgekitError(f"the board answered exit {k}; the model has "
                               f"{len(self.exits)}")
        ex = self.exits[k - 1]
        info = self.graph.tensors[ex.output]
        lp = dequantizer(info.quant)(np.frombuffer(data[1:], np.int8).reshape(info.shape[1:]))
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
        firmware = build(*to_c_exits.generate(self.graph, policy), board=self.mcu.core)
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
