"""Float <-> int8 at a Session's edge, one rule for every backend.

Every int8 Session (edgekit's runtime, ONNX Runtime, LiteRT, tflite-micro, the firmware)
converts a float input and an int8 output with these two functions, so any difference between
backends comes from inside the model, never from how the edges were rounded. Rounding is half
away from zero (as TFLite's ``std::round``), not numpy's half to even.
"""

from __future__ import annotations

import numpy as np

from edgekit.graph import QuantParams


def quantize_array(x: np.ndarray, quant: QuantParams) -> np.ndarray:
    """float -> int8 with the tensor's per-tensor ``scale`` and ``zero_point``."""
    scaled = np.asarray(x, np.float64) / float(quant.scale[0])
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    return np.clip(rounded + int(quant.zero_point[0]), -128, 127).astype(np.int8)


def dequantize_array(q: np.ndarray, quant: QuantParams) -> np.ndarray:
    """int8 -> float: ``(q - zero_point) * scale``."""
    centred = np.asarray(q, np.int32) - int(quant.zero_point[0])
    return (centred * np.float64(quant.scale[0])).astype(np.float32)
