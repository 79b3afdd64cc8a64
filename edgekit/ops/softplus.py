"""softplus: ``log(1 + exp(beta * x)) / beta``, and ``x`` where ``beta * x > threshold``, as
torch computes it. ONNX's Softplus is beta 1 without a threshold, which in float32 equals
torch's default threshold of 20 (beyond it the two differ by less than exp(-20)), so it imports
as that; the writer defines the general op as a function of the model's own. TFLite's float
form is MUL, EXP, ADD, LOG, GREATER and SELECT_V2."""

from __future__ import annotations

import numpy as np

from edgekit.ops.pointwise import pointwise, where
from edgekit.ops.schema import fail


def _check(attrs):
    if attrs["beta"] == 0:
        fail("op 'softplus': beta must not be 0")


def _onnx(f, x, beta, threshold):
    bx = f.add("Mul", x, f.attr("beta"))
    smooth = f.add("Div", f.add("Softplus", bx), f.attr("beta"))
    return f.add("Where", f.add("Greater", bx, f.attr("threshold")), x, smooth)


def _tflite(c, x, beta, threshold):
    bx = c.op("MUL", x, float(beta))
    smooth = c.op("DIV", c.op("LOG", c.op("ADD", c.op("EXP", bx), 1.0)), float(beta))
    c.result("SELECT_V2", c.op("GREATER", bx, float(threshold), dtype="bool"), x, smooth)


softplus = pointwise(
    "softplus",
    lambda x, beta, threshold: where(x * beta > threshold, x, np.log1p(np.exp(x * beta)) / beta),
    attrs={"beta": 1.0, "threshold": 20.0}, check=_check,
    doc="log(1 + exp(beta * x)) / beta; x where beta * x > threshold", torch=("softplus",),
    onnx_import=("Softplus",), onnx=_onnx, tflite=_tflite,
    gpu=lambda torch, x, beta, threshold: torch.nn.functional.softplus(x, beta, threshold),
    grad_x=lambda x, dy, beta, threshold: dy * where(x * beta > threshold, 1.0,
                                                     1 / (1 + np.exp(-x * beta))))
