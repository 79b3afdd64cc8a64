"""``cpu:litert``: the Graph written as ``.tflite`` and run by LiteRT (``ai-edge-litert``), or by
``tflite-runtime`` where only that is installed.

The written model is channels-last (``converters.to_tflite``); this Session transposes the
Graph's NCHW arrays to each input's TFLite layout and back for outputs, and resizes the inputs
to the batch it is given.

int8 kernels (``compile(graph, kernels=...)``; docs/algorithms.md, "Integer arithmetic"):

- ``"xnnpack"`` (the default): LiteRT's XNNPACK delegate requantizes with one float rounding
  where TFLite's rule rounds twice in fixed point, so each convolution differs from edgekit (and
  tflite-micro) by one step on 0.04-0.33 % of its values; a deep network carries these on and
  grows them (measured on the zoo networks: see the README's backend table).
- ``"builtin"``: the builtin optimized kernels. Their GEMM (ruy) rounds negative ties otherwise,
  so convolutions without a ReLU differ by one step on ~0.1 % of values (VWW's MobileNetV1, all
  ReLU, is bit-exact); 3-13x slower than XNNPACK at batch 1.
- ``"reference"``: TFLite's reference kernels, the fixed-point rule itself except per-channel
  FULLY_CONNECTED (which rounds as XNNPACK does): bit-exact with edgekit on ResNet-8, DS-CNN and
  the VWW MobileNetV1, but 40-200x slower than XNNPACK. For checking a model, not serving it.

Per-layer outputs come from the kernels the whole model runs on: ``run_layers`` writes the
model again with every node's output as a model output, so XNNPACK computes each layer and
hands it out (the builtin kernels, read instead, showed no difference while XNNPACK's output
drifted).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.targets._peer import PeerSession, missing, reject_options
from edgekit.targets.base import Target


def to_layout(x: np.ndarray, layout: tuple[int, ...]) -> np.ndarray:
    """A Graph-layout array in a TFLite tensor's layout."""
    return np.ascontiguousarray(x.transpose(layout))


def from_layout(y: np.ndarray, layout: tuple[int, ...]) -> np.ndarray:
    """A TFLite tensor's array back in the Graph's layout."""
    return np.ascontiguousarray(y.transpose(np.argsort(layout)))


def _interpreter_module() -> Any:
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        from tflite_runtime import interpreter
    return interpreter


# compile(kernels=...) -> LiteRT's op resolver
KERNELS = {"xnnpack": "AUTO", "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
           "reference": "BUILTIN_REF"}


class _Runner:
    """One interpreter and the batch size its tensors are currently allocated for."""

    def __init__(self, model: Any, kernels: str):
        module = _interpreter_module()
        self.model = model
        self.interpreter = module.Interpreter(
            model_content=model.data,
            experimental_op_resolver_type=getattr(module.OpResolverType, KERNELS[kernels]))
        self.batch = 0

    def invoke(self, feeds: list[np.ndarray]) -> None:
        it, batch = self.interpreter, feeds[0].shape[0]
        if batch != self.batch:
            for name, x in zip(self.model.inputs, feeds, strict=True):
                index, layout = self.model.tensors[name]
                it.resize_tensor_input(index, list(to_layout(x, layout).shape))
            it.allocate_tensors()
            self.batch = batch
        for name, x in zip(self.model.inputs, feeds, strict=True):
            index, layout = self.model.tensors[name]
            it.set_tensor(index, to_layout(x, layout))
        it.invoke()

    def get(self, name: str) -> np.ndarray:
        index, layout = self.model.tensors[name]
        return from_layout(self.interpreter.get_tensor(index), layout)


class LiteRtSession(PeerSession):
    def __init__(self, graph: Graph, kernels: str = "xnnpack"):
        from edgekit.converters.to_tflite import tflite_model

        super().__init__(graph)
        self.model = tflite_model(graph)
        self.kernels = kernels
        self.runner = _Runner(self.model, kernels)
        self._layers: _Runner | None = None

    def _run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        self.runner.invoke(feeds)
        return [self.runner.get(name) for name in self.graph.outputs]

    def _run_layers(self, feeds: list[np.ndarray]) -> dict[str, np.ndarray]:
        """A second interpreter, with the same kernels, whose outputs include every node's."""
        from edgekit.converters.to_tflite import tflite_model

        if self._layers is None:
            names = [n.outputs[0] for n in self.graph.nodes]
            self._layers = _Runner(tflite_model(self.graph, extra_outputs=names), self.kernels)
        self._layers.invoke(feeds)
        return {n.outputs[0]: self._layers.get(n.outputs[0]) for n in self.graph.nodes}

    def close(self) -> None:
        self.runner = self._layers = None


class LiteRtTarget(Target):
    name = "cpu:litert"

    def available(self) -> tuple[bool, str]:
        if missing("flatbuffers"):
            return False, "flatbuffers is not installed: pip install 'edgekit[tflite]'"
        if missing("ai_edge_litert") and missing("tflite_runtime"):
            return False, "no TFLite interpreter: pip install 'edgekit[tflite]' (ai-edge-litert)"
        if missing("ai_edge_litert") and missing("tflite_micro"):
            return False, ("tflite-runtime has no TFLite schema to write models with: "
                           "pip install 'edgekit[tflite]'")
        return True, ""

    def compile(self, graph: Graph, kernels: str = "xnnpack", **options: Any) -> PeerSession:
        """``kernels``: "xnnpack" (LiteRT's default delegate), "builtin" or "reference" (TFLite's
        reference kernels, exact and slow): see the module doc."""
        reject_options(self.name, options)
        if kernels not in KERNELS:
            raise EdgekitError(f"cpu:litert: kernels is one of {', '.join(KERNELS)}, "
                               f"got {kernels!r}")
        try:
            return LiteRtSession(graph, kernels)
        except (RuntimeError, ValueError) as err:
            raise EdgekitError(f"LiteRT could not load the written model: {err}") from None
