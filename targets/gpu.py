"""``gpu``: a CUDA GPU, through ONNX Runtime's CUDA execution provider when installed
(``onnxruntime-gpu``; float and int8 QDQ models, spiking Graphs time-unrolled as on
``cpu:onnxruntime``), else through torch on ``cuda`` (float32 Graphs, spiking ones included).

The torch backend interprets the Graph with ``torch.nn.functional``, one function per op; it
runs on any torch device, which is how it is tested on machines without a GPU. Nothing here
pretends: without CUDA the target is unavailable and says why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph, Node
from edgekit.ops import NEURON_OPS, implementations
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
        if self.int8:
            raise EdgekitError("the torch GPU backend runs float32 Graphs; deploy the float "
                               "Graph, or install onnxruntime-gpu to run the int8 one")
        self.functions = {**_functions(),
                          **{op: impl.fn for op, impl in implementations("gpu").items()}}
        unsupported = sorted({n.op for n in graph.nodes} - {*self.functions, *NEURON_OPS})
        if unsupported:
            raise EdgekitError(f"the torch GPU backend has no kernel for {unsupported}")
        self.timesteps = graph.metadata.get("timesteps", 1)
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
                    args = [values[n] for n in node.inputs]
                    if node.op in NEURON_OPS:
                        values[node.outputs[0]] = _neuron_step(node, args, membranes)
                    else:
                        values[node.outputs[0]] = self.functions[node.op](*args, **node.attrs)
                for n in names:
                    sums[n] = sums[n] + values[n]
        return {n: (total / self.timesteps).cpu().numpy() for n, total in sums.items()}

    def _run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        values = self._values(feeds, self.graph.outputs)
        return [values[n] for n in self.graph.outputs]

    def _run_layers(self, feeds: list[np.ndarray]) -> dict[str, np.ndarray]:
        return self._values(feeds, [n.outputs[0] for n in self.graph.nodes])


def _neuron_step(node: Node, args: list[Any], membranes: dict[str, Any]) -> Any:
    """One step of an IF/LIF layer: charge, fire (emitting the threshold), reset; the layer's
    membrane, from its initial value, is kept in ``membranes`` under its output's name."""
    x, threshold = args[0], args[1]
    name = node.outputs[0]
    v = membranes.get(name, args[2] if len(args) > 2 else 0.0)
    if node.op == "lif_neuron":
        v = node.attrs["leak"] * v
    u = v + x
    spikes = (u >= threshold).to(u.dtype)
    out = spikes * threshold
    membranes[name] = u - out if node.attrs["reset"] == "subtract" else u * (1 - spikes)
    return out


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


def _functions() -> dict[str, Callable[..., Any]]:
    """Op name -> torch function of (inputs..., **attrs), mirroring the numpy reference."""
    import torch
    import torch.nn.functional as F

    def conv(fn):
        def run(x, w, b=None, *, stride, padding, dilation, groups, activation):
            return activate(fn(pad(x, padding), w, b, stride, 0, dilation, groups), activation)
        return run

    def avgpool(x, *, kernel, stride, padding, count_include_pad):
        taps = kernel[0] * kernel[1]
        sums = F.avg_pool2d(pad(x, padding), kernel, stride) * taps
        if count_include_pad:
            return sums / taps
        ones = pad(torch.ones_like(x[:1, :1]), padding)
        return sums / (F.avg_pool2d(ones, kernel, stride) * taps)

    return {
        "conv2d": conv(F.conv2d),
        "conv1d": conv(F.conv1d),
        "linear": lambda x, w, b=None, *, activation: activate(F.linear(x, w, b), activation),
        "add": lambda x, y, *, activation: activate(x + y, activation),
        "mul": lambda x, y: x * y,
        "maxpool2d": lambda x, *, kernel, stride, padding, dilation: F.max_pool2d(
            pad(x, padding, float("-inf")), kernel, stride, 0, dilation),
        "avgpool2d": avgpool,
        "global_avgpool": lambda x: x.mean(dim=(2, 3), keepdim=True),
        "reshape": lambda x, *, shape: x.reshape(x.shape[0], *shape),
        "concat": lambda *xs, axis: torch.cat(xs, dim=axis),
        "softmax": lambda x, *, axis: torch.softmax(x, dim=axis),
        "layernorm": lambda x, g, b, *, normalized_ndim, eps: F.layer_norm(
            x, x.shape[x.ndim - normalized_ndim:], g, b, eps),
    }


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
