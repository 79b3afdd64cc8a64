"""What every Session over a peer runtime (ONNX Runtime, LiteRT, tflite-micro, GPU) shares.

Each peer runs a model *written* from the Graph, so the Session must make the peer look like
the Graph: inputs and outputs by the Graph's names and shapes (any batch size), and for int8
Graphs the float <-> int8 conversion at the edge, done with ``edgekit.quant.edge`` exactly as the
cpu target does it — otherwise two backends could disagree only because they rounded their
inputs differently. Subclasses implement ``_run`` (and ``_run_layers`` where the peer exposes
intermediate tensors) on arrays already in the Graph's dtypes.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.quant.edge import graph_feeds, graph_results, require_finite_outputs
from edgekit.targets.base import Session


def missing(*modules: str) -> str | None:
    """The first of ``modules`` that cannot be imported here, without importing any."""
    for module in modules:
        try:
            if importlib.util.find_spec(module) is None:
                return module
        except ModuleNotFoundError:
            return module
    return None


def reject_options(target: str, options: dict[str, Any]) -> None:
    if options:
        raise EdgekitError(f"target {target!r} takes no option(s) {sorted(options)}")


class PeerSession(Session):
    """A Graph compiled for a peer runtime; ``notes`` says what was adjusted for this machine."""

    def __init__(self, graph: Graph):
        self.graph = graph.validate()
        self.int8 = graph.metadata.get("quantized") == "int8"
        self.notes: list[str] = []

    def run(self, inputs: Any, raw: bool = False, *, allow_nonfinite: bool = False) -> Any:
        """Outputs for ``inputs``: one array, or a list in the Graph's output order.

        For int8 Graphs float inputs are quantized and int8 outputs dequantized at the edge;
        ``raw=True`` exchanges the int8 tensors themselves. NaN or inf inputs (float32 Graphs
        only) and outputs are refused unless ``allow_nonfinite``.
        """
        feeds = self._feeds(inputs, raw, allow_nonfinite)
        return require_finite_outputs(self.graph.outputs,
                                      graph_results(self.graph, self._run(feeds), raw),
                                      allow_nonfinite)

    def run_layers(self, inputs: Any, raw: bool = False, *,
                   allow_nonfinite: bool = False) -> dict[str, np.ndarray]:
        """Every node's output by tensor name, as the peer computed it (int8 for int8 Graphs)."""
        return self._run_layers(self._feeds(inputs, raw, allow_nonfinite))

    def _run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def _run_layers(self, feeds: list[np.ndarray]) -> dict[str, np.ndarray]:
        raise EdgekitError(f"{type(self).__name__} does not expose per-layer outputs")

    def _feeds(self, inputs: Any, raw: bool, allow_nonfinite: bool) -> list[np.ndarray]:
        return list(graph_feeds(self.graph, inputs, raw, allow_nonfinite).values())
