"""A run that computes only as far as asked, and goes on from there when asked for more.

``Executor.staged(x)`` loads the inputs; ``until(name)`` runs the steps from where the run
stopped up to the step that produces ``name`` and returns that tensor. Early-exit Graphs use
it: the exit a policy accepts is the last thing computed, and the blocks past it never run.

Why resuming is exact: the steps run in the Graph's order, only split in time, so every buffer
holds what the full run would hold at that step (the planner gave each tensor its span in that
order, and the Graph's outputs live to the end). The run borrows its Executor's arena: starting
another run on the same Executor ends it.
"""

from __future__ import annotations

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.quant.edge import dequantizer


class Staged:
    def __init__(self, graph: Graph, program, raw: bool, producer: dict[str, int]):
        self.graph = graph
        self.program = program
        self.raw = raw
        self.producer = producer  # graph output -> index of the step that writes it
        self.done = 0  # steps run so far: the prefix steps[:done]

    def until(self, name: str) -> np.ndarray:
        """The tensor ``name`` (a copy; dequantized from int8 unless ``raw``), running only the
        steps not run yet up to the one that produces it."""
        if name not in self.producer:
            raise EdgekitError(f"{name!r} is not an output of the graph; outputs: "
                               f"{', '.join(self.graph.outputs)}")
        stop = self.producer[name] + 1
        for step in self.program.steps[self.done:stop]:
            step()
        self.done = max(self.done, stop)
        value = self.program.arrays[name]
        info = self.graph.tensors[name]
        return value.copy() if self.raw or info.dtype != "int8" else dequantizer(info.quant)(value)
