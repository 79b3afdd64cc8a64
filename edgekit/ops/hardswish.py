"""hardswish: ``x * relu6(x + 3) / 6`` (MobileNetV3; TFLite's HARD_SWISH, ONNX's HardSwish)."""

from __future__ import annotations

import numpy as np

from edgekit.ops.pointwise import pointwise, where

hardswish = pointwise(
    "hardswish", lambda x: x * np.minimum(np.maximum(x + 3, 0), 6) / 6,
    doc="x * relu6(x + 3) / 6", torch=("hardswish", "hardswish_"), onnx_import=("HardSwish",),
    onnx="HardSwish", tflite="HARD_SWISH",
    gpu=lambda torch, x: torch.nn.functional.hardswish(x),
    grad_x=lambda x, dy: dy * where(x < -3, 0.0, where(x > 3, 1.0, (2 * x + 3) / 6)))
