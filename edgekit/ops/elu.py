"""elu: ``x`` above zero, ``alpha * (exp(x) - 1)`` below (ONNX's Elu; TFLite's ELU has alpha 1,
so other alphas are written as ``relu(x) + alpha * ELU(min(x, 0))``). torch's ``elu`` with
SELU's scale and alpha (what ``selu`` decomposes to) imports as selu."""

from __future__ import annotations

import math

import numpy as np

from edgekit.ops.pointwise import pointwise, where


def elu_terms(c, x, alpha: float) -> tuple[int, int]:
    """``relu(x)`` and ``alpha * ELU(min(x, 0))``, whose sum is ELU with any alpha, from TFLite
    builtins."""
    return c.op("RELU", x), c.op("MUL", c.op("ELU", c.op("MINIMUM", x, 0.0)), float(alpha))


def _tflite(c, x, alpha):
    if alpha == 1:
        c.result("ELU", x)
    else:
        c.result("ADD", *elu_terms(c, x, alpha))


elu = pointwise(
    "elu", lambda x, alpha: np.maximum(x, 0) + alpha * np.expm1(np.minimum(x, 0)),
    attrs={"alpha": 1.0}, doc="x if x > 0 else alpha * (exp(x) - 1)", onnx_import=("Elu",),
    tflite=_tflite, gpu=lambda torch, x, alpha: torch.nn.functional.elu(x, alpha),
    grad=lambda y, dy, alpha: dy * where(y > 0, 1.0, y + alpha))


@elu.implements("torch", names=("elu", "elu_"))
def _torch(c, x, alpha=1.0, scale=1.0, input_scale=1.0):
    from edgekit.converters.from_torch import Unsupported
    from edgekit.ops.selu import ALPHA, SCALE

    if input_scale == 1 and math.isclose(alpha, ALPHA) and math.isclose(scale, SCALE):
        return c.emit("selu", [x])
    if (scale, input_scale) != (1, 1):
        raise Unsupported(f"elu(scale={scale}, input_scale={input_scale})")
    return c.emit("elu", [x], {"alpha": float(alpha)})


@elu.implements("onnx")
def _onnx(e, node, ins):
    return e.add("Elu", ins, alpha=float(node.attrs["alpha"]))
