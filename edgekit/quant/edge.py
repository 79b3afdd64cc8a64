"""Float <-> int8 at a Session's edge, one rule for every backend.

Every int8 Session (edgekit's runtime, ONNX Runtime, LiteRT, tflite-micro, the firmware)
converts a float input and an int8 output with these two functions, so any difference between
backends comes from inside the model, never from how the edges were rounded. Rounding is half
away from zero (as TFLite's ``std::round``), not numpy's half to even. ``graph_feeds`` and
``graph_results`` apply them, with the shape checks every Session shares, to its inputs and
outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph, QuantParams


def quantize_array(x: np.ndarray, quant: QuantParams) -> np.ndarray:
    """float -> int8 with the tensor's per-tensor ``scale`` and ``zero_point`` (one numba pass:
    at batch 1 the numpy version cost more than the int8 model it feeds)."""
    x = np.asarray(x)
    out = np.empty(x.shape, np.int8)
    quantizer(quant)(np.ascontiguousarray(x).reshape(-1), out.reshape(-1))
    return out


def quantizer(quant: QuantParams) -> Callable[[np.ndarray, np.ndarray], None]:
    """``quantize_array`` bound once to a tensor's parameters, writing a flat contiguous float
    array into a flat int8 one: the edgekit runtime quantizes straight into its arena, with one
    numba call and no per-call lookups."""
    from edgekit.runtime.kernels.int8_elementwise import quantize

    scale, zero_point = float(quant.scale[0]), int(quant.zero_point[0])
    return lambda x, out: quantize(x, scale, zero_point, out)


def dequantize_array(q: np.ndarray, quant: QuantParams) -> np.ndarray:
    """int8 -> float: ``(q - zero_point) * scale`` in float64, rounded once to float32."""
    q = np.asarray(q)
    return dequantizer(quant)(q if q.dtype == np.int8 else q.astype(np.int32))


def dequantizer(quant: QuantParams) -> Callable[[np.ndarray], np.ndarray]:
    """``dequantize_array`` bound once to a tensor's parameters (one numba pass, as
    ``quantizer``); the result is a new array."""
    from edgekit.runtime.kernels.int8_elementwise import dequantize

    scale, zero_point = float(quant.scale[0]), int(quant.zero_point[0])

    def run(q: np.ndarray) -> np.ndarray:
        out = np.empty(q.shape, np.float32)
        dequantize(np.ascontiguousarray(q).reshape(-1), zero_point, scale, out.reshape(-1))
        return out

    return run


def graph_feeds(graph: Graph, inputs: Any, raw: bool = False) -> dict[str, np.ndarray]:
    """A Session's inputs (one array, a list in input order, or a dict by name) checked against
    the Graph — shapes with any batch size, the same for all — and in the Graph's dtypes: float
    data for an int8 input is quantized; with ``raw=True`` int8 inputs must already be int8."""
    names = graph.inputs
    if isinstance(inputs, dict):
        if set(inputs) != set(names):
            raise EdgekitError(f"got inputs {sorted(inputs)}, the graph takes {names}")
        values = [inputs[name] for name in names]
    elif isinstance(inputs, (list, tuple)):
        if len(inputs) != len(names):
            raise EdgekitError(f"got {len(inputs)} inputs, the graph takes {names}")
        values = list(inputs)
    elif len(names) == 1:
        values = [inputs]
    else:
        raise EdgekitError(f"the graph takes {len(names)} inputs {names}: pass a dict or list")
    feeds = {name: _feed(graph, name, np.asarray(value), raw)
             for name, value in zip(names, values, strict=True)}
    batches = {x.shape[0] for x in feeds.values()}
    if len(batches) > 1:
        raise EdgekitError(f"inputs have different batch sizes {sorted(batches)}")
    return feeds


def _feed(graph: Graph, name: str, x: np.ndarray, raw: bool) -> np.ndarray:
    info = graph.tensors[name]
    if x.ndim != len(info.shape) or x.shape[1:] != info.shape[1:] or x.shape[0] < 1:
        expected = "(" + ", ".join(["N", *map(str, info.shape[1:])]) + ")"
        raise EdgekitError(f"input {name!r}: expected shape {expected}, got {x.shape}")
    if info.dtype == "int8" and not raw:
        return quantize_array(x, info.quant)
    if info.dtype == "int8" and x.dtype != np.int8:
        raise EdgekitError(f"input {name!r}: raw=True takes int8 data, got {x.dtype}")
    if not np.can_cast(x.dtype, info.dtype, "same_kind"):
        raise EdgekitError(f"input {name!r}: expected {info.dtype} data, got {x.dtype}")
    return np.ascontiguousarray(x, dtype=info.dtype)


def graph_results(graph: Graph, outs: list[np.ndarray], raw: bool = False) -> Any:
    """A Session's outputs (in the Graph's output order) for the caller: int8 outputs
    dequantized unless ``raw`` (an int8 spiking Graph's are int32 sums over its time steps:
    ``time_average``); one array for a one-output Graph, else the list."""
    steps = graph.metadata.get("timesteps") if graph.metadata.get("quantized") else None
    if steps is not None and not raw:
        outs = [time_average(y, graph.tensors[name].quant, steps)
                for name, y in zip(graph.outputs, outs, strict=True)]
    elif not raw:
        outs = [y if graph.tensors[name].dtype != "int8"
                else dequantize_array(y, graph.tensors[name].quant)
                for name, y in zip(graph.outputs, outs, strict=True)]
    return outs[0] if len(outs) == 1 else outs


def time_average(total: np.ndarray, quant: QuantParams, steps: int) -> np.ndarray:
    """An int8 SNN's output: the integer sum over its ``steps`` time steps (per tensor, or per
    channel along axis 1) times ``scale / steps``, that factor rounded once to float32 and the
    product made in float32."""
    factor = (np.asarray(quant.scale, np.float64) / steps).astype(np.float32)
    if quant.axis is not None:
        factor = factor.reshape(-1, *[1] * (total.ndim - 2))
    return np.asarray(total, np.float32) * factor


def dequantize_layers(graph: Graph, layers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-layer outputs (by tensor name) in real units: int8 tensors dequantized."""
    return {name: y if graph.tensors[name].dtype != "int8"
            else dequantize_array(y, graph.tensors[name].quant) for name, y in layers.items()}
