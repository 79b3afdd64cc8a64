"""gelu: ``x * Phi(x)``, exactly (``approximate="none"``: ``0.5 x (1 + erf(x / sqrt 2))``) or
in torch's tanh form (``approximate="tanh"``). TFLite's GELU has both; ONNX has Gelu from opset
20 only, so the writer (opset 17) defines each form as a function of the model's own."""

from __future__ import annotations

import math

import numpy as np

from edgekit.ops.pointwise import erf, pointwise

_K = math.sqrt(2 / math.pi)


def _tanh_form(f, x):
    cube = f.add("Mul", f.add("Mul", x, x), x)
    inner = f.add("Mul", f.add("Add", x, f.add("Mul", cube, 0.044715)), _K)
    return f.add("Mul", f.add("Mul", x, 0.5), f.add("Add", f.add("Tanh", inner), 1.0))


def _tanh_grad(x, dy):
    t = np.tanh(_K * (x + 0.044715 * x * x * x))
    return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _K * (1 + 3 * 0.044715 * x * x))


gelu = pointwise(
    "gelu", {"none": lambda x: 0.5 * x * (1 + erf(x / math.sqrt(2))),
             "tanh": lambda x: 0.5 * x * (1 + np.tanh(_K * (x + 0.044715 * x * x * x)))},
    attrs={"approximate": "none"}, doc="x * Phi(x), or its tanh approximation",
    torch=("gelu", "gelu_"), onnx_import=("Gelu",),
    onnx={"none": lambda f, x, approximate: f.add(
              "Mul", f.add("Mul", x, 0.5),
              f.add("Add", f.add("Erf", f.add("Mul", x, 1 / math.sqrt(2))), 1.0)),
          "tanh": lambda f, x, approximate: _tanh_form(f, x)},
    tflite=lambda c, x, approximate: c.result(
        "GELU", x, options=c.options("Gelu", approximate=approximate == "tanh")),
    gpu=lambda torch, x, approximate: torch.nn.functional.gelu(x, approximate=approximate),
    grad_x={"none": lambda x, dy: dy * (0.5 * (1 + erf(x / math.sqrt(2)))
                                        + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)),
            "tanh": _tanh_grad})
