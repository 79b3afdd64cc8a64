"""``cpu:tflite-micro``: the ``.tflite`` model run by tflite-micro's host interpreter — the same
reference kernels a microcontroller runs, so for int8 Graphs it must agree with edgekit's runtime
bit for bit.

The interpreter holds one sample (its arena is planned for batch 1), so a batch runs sample by
sample. The arena is sized from the model's activations with room for the kernels' own data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.targets._peer import PeerSession, missing, reject_options
from edgekit.targets.base import Target
from edgekit.targets.litert import from_layout, to_layout

_ARENA_SLACK = 64 * 1024  # per-op data (per-channel multipliers, scratch) beyond activations


def _arena_bytes(graph: Graph) -> int:
    """Every activation at once, twice over: ample whatever the planner does, and small."""
    activations = sum(t.nbytes for n, t in graph.tensors.items() if n not in graph.params)
    return 2 * activations + _ARENA_SLACK


class TfliteMicroSession(PeerSession):
    def __init__(self, graph: Graph, preserve: bool = False):
        from tflite_micro.python.tflite_micro import runtime

        from edgekit.converters.to_tflite import tflite_model

        super().__init__(graph)
        self.model = tflite_model(graph)
        config = (runtime.InterpreterConfig.kPreserveAllTensors if preserve
                  else runtime.InterpreterConfig.kAllocationRecording)
        # The keyword's spelling ("intrepreter") is tflite-micro's own.
        self.interpreter = runtime.Interpreter.from_bytes(
            self.model.data, arena_size=_arena_bytes(graph) * (4 if preserve else 1),
            intrepreter_config=config)
        self.preserve = preserve
        self._layers: TfliteMicroSession | None = None

    def _invoke(self, sample: list[np.ndarray]) -> None:
        for i, (name, x) in enumerate(zip(self.graph.inputs, sample, strict=True)):
            self.interpreter.set_input(to_layout(x, self.model.layout(name)), i)
        self.interpreter.invoke()

    def _run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        outs: list[list[np.ndarray]] = [[] for _ in self.graph.outputs]
        for b in range(feeds[0].shape[0]):
            self._invoke([x[b:b + 1] for x in feeds])
            for i, name in enumerate(self.graph.outputs):
                outs[i].append(from_layout(self.interpreter.get_output(i),
                                           self.model.layout(name)))
        return [np.concatenate(o) for o in outs]

    def _run_layers(self, feeds: list[np.ndarray]) -> dict[str, np.ndarray]:
        """From a second interpreter that keeps every tensor (no memory reuse)."""
        if not self.preserve:
            self._layers = self._layers or TfliteMicroSession(self.graph, preserve=True)
            return self._layers._run_layers(feeds)
        names = [n.outputs[0] for n in self.graph.nodes]
        per_sample: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for b in range(feeds[0].shape[0]):
            self._invoke([x[b:b + 1] for x in feeds])
            for name in names:
                index, layout = self.model.tensors[name]
                data = self.interpreter.GetTensor(index, 0)["tensor_data"]
                per_sample[name].append(from_layout(data, layout))
        return {n: np.concatenate(v) for n, v in per_sample.items()}

    def close(self) -> None:
        self.interpreter = self._layers = None


class TfliteMicroTarget(Target):
    name = "cpu:tflite-micro"

    def available(self) -> tuple[bool, str]:
        if missing("tflite_micro", "flatbuffers"):
            return False, "tflite-micro is not installed: pip install 'edgekit[tflite]'"
        return True, ""

    def compile(self, graph: Graph, **options: Any) -> PeerSession:
        reject_options(self.name, options)
        try:
            return TfliteMicroSession(graph)
        except RuntimeError as err:
            raise EdgekitError(f"tflite-micro could not load the written model: {err}") from None
