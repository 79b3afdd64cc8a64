"""``gpu``: a CUDA GPU, through ONNX Runtime's CUDA execution provider when installed
(``onnxruntime-gpu``; float and int8 QDQ models, spiking Graphs time-unrolled as on
``cpu:onnxruntime``), else through torch on ``cuda`` (float32 Graphs, spiking ones included).

The torch backend interprets the Graph with ``torch.nn.functional``, one function per op
(each op module's "gpu" implementation); it runs on any torch device, which is how it is
tested on machines without a GPU. Nothing here pretends: without CUDA the target is
unavailable and says why.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.ops import implementations
from edgekit.spiking import is_spiking
from edgekit.targets._peer import PeerSession, missing, reject_options
from edgekit.targets.base import Target

CUDA_EP = "CUDAExecutionProvider"


def backend() -> tuple[str | None, str]:
    """("onnxruntime" | "torch", "") for the first CUDA backend usable here, else (None, why)."""
    if not missing("onnxruntime"):
        import onnxruntime as ort

        if CUDA_EP in ort.get_available_providers():
            return "onnxruntime", ""
    if not missing("torch"):
        import torch

        if torch.cuda.is_available():
            return "torch", ""
        why_torch = "torch.cuda.is_available() is False"
    else:
        why_torch = "torch is not installed"
    return None, (f"no CUDA GPU backend: onnxruntime has no {CUDA_EP} (pip install "
                  f"onnxruntime-gpu) and {why_torch}")


class TorchSession(PeerSession):
    """A float32 Graph run op by op with torch on ``device``. A spiking Graph (direct
    encoding) runs its T steps as ``SpikingExecutor`` does, batched on the device: the neurons'
    membranes carried from step to step, the outputs (every node's, for ``run_layers``)
    averaged over the steps."""

    def __init__(self, graph: Graph, device: str = "cuda"):
        import torch

        super().__init__(graph)
        if self.int8 or graph.metadata.get("quantized"):
            raise EdgekitError(f"the torch GPU backend runs float32 Graphs, not "
                               f"{graph.metadata['quantized']} ones; deploy the float Graph, or "
                               "install onnxruntime-gpu to run the quantized one")
        self.functions = {op: impl.fn for op, impl in implementations("gpu").items()}
        self.stateful = {op for op, impl in implementations("gpu").items()
                         if impl.options.get("state")}  # neurons: fn(v, *inputs) -> (out, v)
        unsupported = sorted({n.op for n in graph.nodes} - set(self.functions))
        if unsupported:
            raise EdgekitError(f"the torch GPU backend has no kernel for {unsupported}")
        self.timesteps = graph.metadata["timesteps"] if is_spiking(graph) else 1
        if self.timesteps > 1 and graph.metadata.get("encoding", "direct") != "direct":
            raise EdgekitError("the torch GPU backend runs direct-encoded spiking Graphs; rate "
                               "encoding draws its input spikes on the cpu target")
        self.torch, self.device = torch, torch.device(device)
        self.params = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device)
                       for k, v in graph.params.items()}

    def _values(self, feeds: list[np.ndarray], names: list[str]) -> dict[str, Any]:
        """The tensors ``names``, each averaged over the time steps (one step if not spiking)."""
        values = dict(self.params)
        values.update({n: self.torch.from_numpy(x).to(self.device)
                       for n, x in zip(self.graph.inputs, feeds, strict=True)})
        membranes: dict[str, Any] = {}
        sums = dict.fromkeys(names, 0)
        with self.torch.inference_mode():
            for _ in range(self.timesteps):
                for node in self.graph.nodes:
                    args, out = [values[n] for n in node.inputs], node.outputs[0]
                    fn = self.functions[node.op]
                    if node.op in self.stateful:  # the layer's membrane, from step to step
                        values[out], membranes[out] = fn(membranes.get(out), *args, **node.attrs)
                    else:
                        values[out] = fn(*args, **node.attrs)
                for n in names:
                    sums[n] = sums[n] + values[n]
        return {n: (total / self.timesteps).cpu().numpy() for n, total in sums.items()}

    def _run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        values = self._values(feeds, self.graph.outputs)
        return [values[n] for n in self.graph.outputs]

    def _run_layers(self, feeds: list[np.ndarray]) -> dict[str, np.ndarray]:
        return self._values(feeds, [n.outputs[0] for n in self.graph.nodes])


def activate(y: Any, activation: str) -> Any:
    """Torch tensor ``y`` through a fused activation (none, relu, relu6)."""
    import torch.nn.functional as F

    return y if activation == "none" else getattr(F, activation)(y)


def pad(x: Any, padding: list[int], value: float = 0.0) -> Any:
    """The Graph's [begins..., ends...] padding as F.pad's last-axis-first pairs."""
    import torch.nn.functional as F

    half = len(padding) // 2
    pairs = [(padding[i], padding[i + half]) for i in reversed(range(half))]
    return F.pad(x, [p for pair in pairs for p in pair], value=value)


class GpuTarget(Target):
    name = "gpu"

    def available(self) -> tuple[bool, str]:
        found, why = backend()
        return found is not None, why

    def compile(self, graph: Graph, **options: Any) -> PeerSession:
        reject_options(self.name, options)
        found, why = backend()
        if found == "onnxruntime":
            from edgekit.targets.onnxruntime import OnnxRuntimeSession

            return OnnxRuntimeSession(graph, [CUDA_EP, "CPUExecutionProvider"], optimize=True)
        if found == "torch":
            return TorchSession(graph)
        raise EdgekitError(f"target 'gpu' is not available here: {why}")
