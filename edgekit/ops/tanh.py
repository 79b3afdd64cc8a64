"""tanh (TFLite's TANH, ONNX's Tanh)."""

from __future__ import annotations

import numpy as np

from edgekit.ops.pointwise import pointwise

tanh = pointwise(
    "tanh", lambda x: np.tanh(x), doc="tanh(x)", torch=("tanh", "tanh_"), onnx_import=("Tanh",),
    onnx="Tanh", tflite="TANH", gpu=lambda torch, x: torch.tanh(x),
    grad=lambda y, dy: dy * (1 - y * y))
