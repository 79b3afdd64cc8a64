"""silu (swish): ``x * sigmoid(x)``. Neither ONNX (opset 17) nor TFLite has it: ONNX gets a
function of the model's own (Sigmoid, Mul), TFLite's float form is LOGISTIC and MUL."""

from __future__ import annotations

import numpy as np

from edgekit.ops.pointwise import pointwise

silu = pointwise(
    "silu", lambda x: x / (1 + np.exp(-x)), doc="x * sigmoid(x)", torch=("silu", "silu_"),
    onnx=lambda f, x: f.add("Mul", x, f.add("Sigmoid", x)),
    tflite=lambda c, x: c.result("MUL", x, c.op("LOGISTIC", x)),
    gpu=lambda torch, x: torch.nn.functional.silu(x),
    grad_x=lambda x, dy: dy / (1 + np.exp(-x)) * (1 + x * (1 - 1 / (1 + np.exp(-x)))))
