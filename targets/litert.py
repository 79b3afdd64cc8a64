"""``cpu:litert``: the Graph written as ``.tflite`` and run by LiteRT (``ai-edge-litert``), or by
``tflite-runtime`` where only that is installed.

The written model is channels-last (``converters.to_tflite``); this Session transposes the
Graph's NCHW arrays to each input's TFLite layout and back for outputs, and resizes the inputs
to the batch it is given.

int8: LiteRT's default XNNPACK delegate requantizes with one float rounding, so it may differ
from the TFLite fixed-point rule (and from tflite-micro and edgekit) by one step on a few values.
``compile(graph, xnnpack=False)`` uses LiteRT's builtin kernels instead; they follow the
fixed-point rule except in their GEMM paths (1x1 convolutions, FULLY_CONNECTED), measured one
step off on ~0.2-1 % of values. Per-layer outputs always come from the builtin kernels (XNNPACK
keeps its intermediates to itself).
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


class _Runner:
    """One interpreter and the batch size its tensors are currently allocated for."""

    def __init__(self, model: Any, builtin_kernels: bool, preserve: bool):
        module = _interpreter_module()
        kwargs: dict[str, Any] = {"model_content": model.data}
        if builtin_kernels:
            kwargs["experimental_op_resolver_type"] = (
                module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        if preserve:
            kwargs["experimental_preserve_all_tensors"] = True
        self.model = model
        self.interpreter = module.Interpreter(**kwargs)
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
    def __init__(self, graph: Graph, xnnpack: bool = True):
        from edgekit.converters.to_tflite import tflite_model

        super().__init__(graph)
        self.model = tflite_model(graph)
        self.runner = _Runner(self.model, builtin_kernels=not xnnpack, preserve=False)
        self._layers: _Runner | None = None

    def _run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        self.runner.invoke(feeds)
        return [self.runner.get(name) for name in self.graph.outputs]

    def _run_layers(self, feeds: list[np.ndarray]) -> dict[str, np.ndarray]:
        if self._layers is None:
            self._layers = _Runner(self.model, builtin_kernels=True, preserve=True)
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

    def compile(self, graph: Graph, xnnpack: bool = True, **options: Any) -> PeerSession:
        """``xnnpack=False`` runs LiteRT's builtin kernels instead of the XNNPACK delegate."""
        reject_options(self.name, options)
        try:
            return LiteRtSession(graph, xnnpack)
        except (RuntimeError, ValueError) as err:
            raise EdgekitError(f"LiteRT could not load the written model: {err}") from None
