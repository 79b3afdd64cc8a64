"""log, the natural logarithm (TFLite's LOG, ONNX's Log): NaN below zero, -inf at zero; on int8
both are the lowest value (``numerics.params.lut_params``)."""

from __future__ import annotations

import numpy as np

from edgekit.ops.pointwise import pointwise

log = pointwise(
    "log", lambda x: np.log(x), doc="ln x", torch=("log", "log_"), onnx_import=("Log",),
    onnx="Log", tflite="LOG", gpu=lambda torch, x: torch.log(x),
    grad=lambda y, dy: dy * np.exp(-y))
