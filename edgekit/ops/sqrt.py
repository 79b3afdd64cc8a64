"""sqrt (TFLite's SQRT, ONNX's Sqrt): NaN below zero; on int8 the lowest value there
(``numerics.params.lut_params``)."""

from __future__ import annotations

import numpy as np

from edgekit.ops.pointwise import pointwise

sqrt = pointwise(
    "sqrt", lambda x: np.sqrt(x), doc="x ** 0.5", torch=("sqrt", "sqrt_"), onnx_import=("Sqrt",),
    onnx="Sqrt", tflite="SQRT", gpu=lambda torch, x: torch.sqrt(x),
    grad=lambda y, dy: dy * 0.5 / y)
