"""Float <-> int8 at a Session's edge, one rule for every backend.

Every int8 Session (edgekit's runtime, ONNX Runtime, LiteRT, tflite-micro, the firmware)
converts a float input and an int8 output with these two functions, so any difference between
backends comes from inside the model, never from how the edges were rounded. Rounding is half
away from zero (as TFLite's ``std::round``), not numpy's half to even. ``to_graph_inputs`` and
``from_graph_outputs`` apply them to a Session's named inputs and outputs.
"""

from __future__ import annotations

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph, QuantParams


def quantize_array(x: np.ndarray, quant: QuantParams) -> np.ndarray:
    """float -> int8 with the tensor's per-tensor ``scale`` and ``zero_point``."""
    scaled = np.asarray(x, np.float64) / float(quant.scale[0])
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    return np.clip(rounded + int(quant.zero_point[0]), -128, 127).astype(np.int8)


def dequantize_array(q: np.ndarray, quant: QuantParams) -> np.ndarray:
    """int8 -> float: ``(q - zero_point) * scale``."""
    centred = np.asarray(q, np.int32) - int(quant.zero_point[0])
    return (centred * np.float64(quant.scale[0])).astype(np.float32)


def to_graph_inputs(graph: Graph, feeds: dict[str, np.ndarray],
                    raw: bool = False) -> dict[str, np.ndarray]:
    """Inputs (by name) in the dtypes the Graph takes: float data for an int8 input is quantized
    with its quant params; with ``raw=True`` int8 inputs must already be int8 and pass as they
    are. Float inputs of a float Graph pass unchanged."""
    converted = {}
    for name, x in feeds.items():
        info = graph.tensors[name]
        if info.dtype == "int8" and not raw:
            x = quantize_array(x, info.quant)
        elif info.dtype == "int8" and np.asarray(x).dtype != np.int8:
            raise EdgekitError(f"input {name!r}: raw=True takes int8 data, got "
                               f"{np.asarray(x).dtype}")
        converted[name] = x
    return converted


def from_graph_outputs(graph: Graph, outs: dict[str, np.ndarray],
                       raw: bool = False) -> dict[str, np.ndarray]:
    """Outputs (by name) for the caller: int8 outputs dequantized to float32 unless ``raw``."""
    return {name: y if raw or graph.tensors[name].dtype != "int8"
            else dequantize_array(y, graph.tensors[name].quant) for name, y in outs.items()}
