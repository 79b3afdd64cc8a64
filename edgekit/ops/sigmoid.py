"""sigmoid: ``1 / (1 + exp(-x))`` (TFLite's LOGISTIC, ONNX's Sigmoid)."""

from __future__ import annotations

import numpy as np

from edgekit.ops.pointwise import pointwise

sigmoid = pointwise(
    "sigmoid", lambda x: 1 / (1 + np.exp(-x)), doc="1 / (1 + exp(-x))",
    torch=("sigmoid", "sigmoid_"), onnx_import=("Sigmoid",), onnx="Sigmoid", tflite="LOGISTIC",
    gpu=lambda torch, x: torch.sigmoid(x), grad=lambda y, dy: dy * y * (1 - y))
