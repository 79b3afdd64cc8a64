"""exp (TFLite's EXP, ONNX's Exp)."""

from __future__ import annotations

import numpy as np

from edgekit.ops.pointwise import pointwise

exp = pointwise(
    "exp", lambda x: np.exp(x), doc="e ** x", torch=("exp", "exp_"), onnx_import=("Exp",),
    onnx="Exp", tflite="EXP", gpu=lambda torch, x: torch.exp(x), grad=lambda y, dy: dy * y)
