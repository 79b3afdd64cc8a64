"""An anytime Graph on a microcontroller: one firmware image (``converters.to_c_anytime``) holds
the shared weights and the sub-network table, and each request names the path to run
(INFER_PATH), so ``session.run(x, budget="50%")`` switches budget per call with nothing
reloaded or reflashed, and the board runs only that path's steps. No torch here."""

from __future__ import annotations

from typing import Any

from edgekit.anytime.table import choose, plan, table
from edgekit.errors import EdgekitError
from edgekit.firmware_bridge.link import BoardError
from edgekit.targets.mcu import McuSession

UNKNOWN_COMMAND = 3  # protocol.ERRORS


class AnytimeMcuSession(McuSession):
    """``run(x)`` runs the full Graph (INFER); ``run(x, budget=...)`` or ``run(x, path="2102")``
    the best path within the budget (``table.choose``), or that path. ``last_ticks`` then holds
    the ticks of the path's steps, ``last_path`` the path."""

    def __init__(self, graph: Any, board: Any, firmware: Any | None):
        super().__init__(graph, board, firmware)
        self.paths = list(table(graph)["paths"])  # the firmware's table, in its order
        self._chosen: dict[Any, str] = {}
        self._path: str | None = None
        self.last_path: str | None = None

    def run(self, inputs: Any, raw: bool = False, *, allow_nonfinite: bool = False,
            budget: Any = None, path: str | None = None) -> Any:
        if budget is not None and path is None:
            path = self._chosen.get(budget) or self._chosen.setdefault(
                budget, choose(self.graph, budget))
        if path is not None:
            plan(self.graph, path)  # an unknown path is an EdgekitError here, not on the board
        self._path = path
        try:
            return super().run(inputs, raw, allow_nonfinite=allow_nonfinite)
        finally:
            self._path = None

    def _infer(self, sample: bytes) -> tuple[int, list[int], bytes]:
        from edgekit.firmware_bridge import stream

        self.last_path = self._path
        if self._path is None:
            return super()._infer(sample)
        request = (self.paths.index(self._path), len(plan(self.graph, self._path).nodes))
        try:
            return stream.infer(self.board.link, sample, request)
        except BoardError as err:
            if err.code != UNKNOWN_COMMAND:
                raise
            raise EdgekitError(f"the board's firmware ({self.hello.firmware}) does not run "
                               "anytime paths (no INFER_PATH): rebuild and flash the firmware "
                               "for this model (README, 'Microcontrollers')") from None
