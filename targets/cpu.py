"""``cpu``: edgekit's own numba runtime, the reference every other target is checked against."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.graph import Graph
from edgekit.targets.base import Session, Target


class RuntimeSession(Session):
    def __init__(self, graph: Graph):
        from edgekit.runtime import executor_for

        self.graph = graph
        self.executor = executor_for(graph)
        self._anytime = None

    def run(self, inputs: Any, raw: bool = False, *, allow_nonfinite: bool = False,
            budget: Any = None) -> Any:
        """For int8 Graphs float in and out (converted at the edge); ``raw=True``: int8.
        ``budget`` (MACs, or ``"50%"``): an anytime Graph runs its best path within it, on the
        same weights (``edgekit.anytime.runtime``)."""
        if budget is not None:
            if self._anytime is None:
                from edgekit.anytime.runtime import AnytimeRunner

                self._anytime = AnytimeRunner(self.graph, self.executor)
            return self._anytime.run(inputs, budget, raw=raw, allow_nonfinite=allow_nonfinite)
        return self.executor.run(inputs, raw, allow_nonfinite=allow_nonfinite)

    def run_layers(self, inputs: Any, raw: bool = False, *,
                   allow_nonfinite: bool = False) -> dict[str, np.ndarray]:
        return self.executor.run_layers(inputs, raw, allow_nonfinite=allow_nonfinite)


class CpuTarget(Target):
    name = "cpu"

    def compile(self, graph: Graph, **options: Any) -> Session:
        return RuntimeSession(graph)
