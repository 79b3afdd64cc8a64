"""``cpu:onnxruntime``: the Graph written as ONNX (QDQ for int8) and run by ONNX Runtime's CPU
execution provider.

ONNX Runtime on x86 CPUs with AVX2 but without VNNI computes its fused int8 convolutions with
u8 x s8 multiply-adds (``vpmaddubsw``) whose int16 pair sums saturate: measured on a small
depthwise-separable CNN, accuracy fell from 90.9 % (float) to 74.8 % (int8), though the same QDQ
model scored 90.6 % with graph optimizations off (``docs/algorithms.md``). So for int8 Graphs on
such a CPU this target turns graph optimizations off — the QDQ pairs then run as float ops with
exact int8 rounding at every tensor — and says so in ``session.notes``. ``optimize=True`` or
``False`` in ``compile`` overrides the detection.

Agreement with edgekit's runtime (measured with ``edgekit.validate``'s int8 steps): a QDQ layer,
fused into QLinearConv or run as float ops, requantizes with one float multiplier and rounds
once, half to even, where TFLite's rule rounds twice in fixed point; so each convolution
differs by one step on 0.04-0.33 % of its values, as LiteRT's XNNPACK does, and a deep network
carries the differences on and grows them (the README's backend table). Graph optimizations
on or off do not change this, and no ORT option restores TFLite's rounding. ``run_layers``
reads every layer from a second session with the same options whose outputs include every
node's; ORT then fuses fewer QDQ groups (one feeding a graph output stays unfused), so with
optimizations on its layers may not be what the model computes (on the VWW MobileNetV1 they
are the unfused path's, and the last one differs from the model's output). ``edgekit.validate``
compares the two (``layers_reproduce_outputs``) and says so in its notes. Neither way round it
works: a second DequantizeLinear per exposed tensor blocks the same fusions, and the optimized
model ORT saves (``optimized_model_filepath``) keeps few of the Graph's tensor names (on the
VWW MobileNetV1 1 of 31: its fused nodes are renamed, their activations uint8 and NHWC).
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.graph import Graph
from edgekit.spiking import is_spiking
from edgekit.targets._peer import PeerSession, missing, reject_options
from edgekit.targets.base import Target

_X86 = {"x86_64", "amd64", "i386", "i686", "x86"}
_VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "avx_vnni_int8"}


def u8s8_saturation_risk(cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """Why ORT's fused int8 kernels may saturate on this CPU, or None when they cannot.

    Only x86 without VNNI is affected. Where the CPU flags cannot be read (not Linux), an x86
    CPU is assumed affected: a slower exact model beats a fast wrong one.
    """
    if platform.machine().lower() not in _X86:
        return None
    try:
        flags = {f for line in Path(cpuinfo).read_text().splitlines()
                 if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    except OSError:
        return "x86 CPU whose flags cannot be read: VNNI not confirmed"
    if flags & _VNNI_FLAGS:
        return None
    if "avx2" in flags:
        return "x86 CPU with AVX2 but no VNNI (ORT's u8 x s8 int8 kernels saturate there)"
    return None


class OnnxRuntimeSession(PeerSession):
    def __init__(self, graph: Graph, providers: list[str], optimize: bool | None = None):
        import onnxruntime as ort

        from edgekit.converters.to_onnx import onnx_model

        super().__init__(graph)
        self.providers = providers
        self.options = ort.SessionOptions()
        risk = u8s8_saturation_risk() if self.int8 and optimize is None else None
        if risk:
            self.notes.append(f"graph optimizations off: {risk}")
        if optimize is False or risk:
            self.options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if is_spiking(graph):  # a spiking Graph: its time-unrolled form
            from edgekit.converters.snn_onnx import snn_onnx_model

            self.model = snn_onnx_model(graph)
        else:
            self.model = onnx_model(graph)
        self.session = self._session(self.model)
        self._layers: Any = None

    def _session(self, model: Any) -> Any:
        import onnxruntime as ort

        return ort.InferenceSession(model.SerializeToString(), self.options,
                                    providers=self.providers)

    def _named(self, feeds: list[np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.graph.inputs, feeds, strict=True))

    def _run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.graph.outputs, self._named(feeds))

    def _run_layers(self, feeds: list[np.ndarray]) -> dict[str, np.ndarray]:
        """A second session whose outputs include every node's output tensor."""
        from edgekit.converters.to_onnx import onnx_model

        names = [n.outputs[0] for n in self.graph.nodes]
        if self._layers is None:
            self._layers = self._session(onnx_model(self.graph, extra_outputs=names))
        outs = self._layers.run(names, self._named(feeds))
        return dict(zip(names, outs, strict=True))

    def close(self) -> None:
        self.session = self._layers = None


class OnnxRuntimeTarget(Target):
    name = "cpu:onnxruntime"

    def available(self) -> tuple[bool, str]:
        absent = missing("onnx", "onnxruntime")
        if absent:
            return False, f"{absent} is not installed: pip install 'edgekit[onnx]'"
        return True, ""

    def compile(self, graph: Graph, optimize: bool | None = None, **options: Any) -> PeerSession:
        """``optimize``: None detects (see the module doc), True/False forces ORT's graph
        optimizations on or off."""
        reject_options(self.name, options)
        return OnnxRuntimeSession(graph, ["CPUExecutionProvider"], optimize)
