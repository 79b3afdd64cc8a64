"""``gpu``: a CUDA GPU, through ONNX Runtime's CUDA execution provider when installed
(``onnxruntime-gpu``; float and int8 QDQ models), else through torch on ``cuda`` (float32 Graphs).

The torch backend interprets the Graph with ``torch.nn.functional``, one function per op; it
runs on any torch device, which is how it is tested on machines without a GPU. Nothing here
pretends: without CUDA the target is unavailable and says why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
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
    """A float32 Graph run op by op with torch on ``device``."""

    def __init__(self, graph: Graph, device: str = "cuda"):
        import torch

        super().__init__(graph)
        if self.int8:
            raise EdgekitError("the torch GPU backend runs float32 Graphs; deploy the float "
                               "Graph, or install onnxruntime-gpu to run the int8 one")
        self.torch, self.device = torch, torch.device(device)
        self.params = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device)
                       for k, v in graph.params.items()}
        self.functions = _functions()

    def _values(self, feeds: list[np.ndarray]) -> dict[str, Any]:
        values = dict(self.params)
        values.update({n: self.torch.from_numpy(x).to(self.device)
                       for n, x in zip(self.graph.inputs, feeds, strict=True)})
        with self.torch.inference_mode():
            for node in self.graph.nodes:
                args = [values[n] for n in node.inputs]
                values[node.outputs[0]] = self.functions[node.op](*args, **node.attrs)
        return values

    def _run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        values = self._values(feeds)
        return [values[n].cpu().numpy() for n in self.graph.outputs]

    def _run_layers(self, feeds: list[np.ndarray]) -> dict[str, np.ndarray]:
        values = self._values(feeds)
        return {n.outputs[0]: values[n.outputs[0]].cpu().numpy() for n in self.graph.nodes}


def _functions() -> dict[str, Callable[..., Any]]:
    """Op name -> torch function of (inputs..., **attrs), mirroring the numpy reference."""
    import torch
    import torch.nn.functional as F

    act = {"none": lambda y: y, "relu": F.relu, "relu6": F.relu6}

    def pad(x, padding, value=0.0):
        """The Graph's [begins..., ends...] padding as F.pad's last-axis-first pairs."""
        half = len(padding) // 2
        pairs = [(padding[i], padding[i + half]) for i in reversed(range(half))]
        return F.pad(x, [p for pair in pairs for p in pair], value=value)

    def conv(fn):
        def run(x, w, b=None, *, stride, padding, dilation, groups, activation):
            return act[activation](fn(pad(x, padding), w, b, stride, 0, dilation, groups))
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
        "linear": lambda x, w, b=None, *, activation: act[activation](F.linear(x, w, b)),
        "add": lambda x, y, *, activation: act[activation](x + y),
        "mul": lambda x, y: x * y,
        "relu": F.relu,
        "relu6": F.relu6,
        "leaky_relu": lambda x, *, alpha: F.leaky_relu(x, alpha),
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
