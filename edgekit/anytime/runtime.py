"""Running any path of an anytime Graph per call on the edgekit runtime, on one set of weights.

The Executor prepares the full Graph once per batch size with the naive planner (every tensor
its own buffer, ``PLANNER``), so the steps it binds serve every path: a path runs the steps of
its nodes and, where it leaves out an add whose output a later node reads, one copy of the
tensor standing for it (``table.Plan``). Switching paths is choosing a list of steps: nothing is
reloaded, re-planned or re-prepared, and no weight is copied (every path's steps are the full
program's own).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.anytime.table import choose, extract, plan
from edgekit.graph import Graph
from edgekit.runtime import Executor, NaivePlanner

PLANNER = NaivePlanner()


class AnytimeRunner:
    """``AnytimeRunner(graph).run(x, budget="50%")``, or ``path="2102"``."""

    def __init__(self, graph: Graph, executor: Executor | None = None):
        self.graph = graph
        self.executor = executor or Executor(graph)
        self._steps: dict[tuple[str, int], list] = {}
        self._chosen: dict[Any, str] = {}  # budget -> path: the table is fixed once loaded

    def steps(self, path: str, batch: int) -> list:
        """The path's steps on the full program for ``batch`` (bound once, then cached)."""
        key = (path, batch)
        if key not in self._steps:
            p = plan(self.graph, path)
            program = self.executor.program(batch, PLANNER)
            read = {n for i in p.nodes for n in self.graph.nodes[i].inputs}
            steps = []
            for i, (node, step) in enumerate(zip(self.graph.nodes, program.steps, strict=True)):
                out = node.outputs[0]
                if i in p.nodes:
                    steps.append(step)
                elif out in read:  # a left-out add whose output a kept node reads
                    steps.append(_copy(program.arrays[p.source(out)], program.arrays[out]))
            self._steps[key] = steps
        return self._steps[key]

    def run(self, inputs: Any, budget: Any = None, *, path: str | None = None,
            raw: bool = False, allow_nonfinite: bool = False) -> Any:
        """Outputs of the path for ``budget`` (``table.choose``), or of ``path``; the best path
        within 100 % without either. Inputs and outputs as ``Executor.run``."""
        if path is None:
            key = "100%" if budget is None else budget
            path = self._chosen.get(key) or self._chosen.setdefault(key, choose(self.graph, key))
        program = self.executor.feed(inputs, raw, PLANNER, allow_nonfinite)
        for step in self.steps(path, program.batch):
            step()
        return self.executor.results(program, raw, allow_nonfinite)


def _copy(src: np.ndarray, dst: np.ndarray):
    return lambda: np.copyto(dst, src)


class PathSessions:
    """Any path per call on a target that cannot run part of a model (ONNX Runtime, LiteRT,
    tflite-micro, gpu; ``cpu`` and boards run paths of the one Graph: ``AnytimeRunner``,
    ``board``): each path's plain Graph (``table.extract``) is compiled on the target the first
    time a budget picks it, and its Session kept. Nothing is reloaded per call, but each
    compiled path holds its own copy of its weights inside that runtime."""

    def __init__(self, graph: Graph, target: str, **options: Any):
        self.graph, self.target, self.options = graph, target, options
        self._sessions: dict[str, Any] = {}

    def run(self, inputs: Any, budget: Any = None, *, path: str | None = None) -> Any:
        from edgekit.targets import deploy

        path = path or choose(self.graph, "100%" if budget is None else budget)
        if path not in self._sessions:
            self._sessions[path] = deploy(extract(self.graph, path), self.target, **self.options)
        return self._sessions[path].run(inputs)

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()

    def __enter__(self) -> PathSessions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
