"""selu: ``SCALE * elu(x, ALPHA)`` with the self-normalizing constants (ONNX's Selu; TFLite has
no builtin, so its float form is ELU's terms times SCALE)."""

from __future__ import annotations

import numpy as np

from edgekit.ops.elu import elu_terms
from edgekit.ops.pointwise import pointwise, where

ALPHA = 1.6732632423543772848170429916717
SCALE = 1.0507009873554804934193349852946

selu = pointwise(
    "selu", lambda x: SCALE * (np.maximum(x, 0) + ALPHA * np.expm1(np.minimum(x, 0))),
    doc="SCALE * (x if x > 0 else ALPHA * (exp(x) - 1))", torch=("selu", "selu_"),
    tflite=lambda c, x: c.result("MUL", c.op("ADD", *elu_terms(c, x, ALPHA)), SCALE),
    gpu=lambda torch, x: torch.nn.functional.selu(x),
    grad=lambda y, dy: dy * where(y > 0, SCALE, y + SCALE * ALPHA))


@selu.implements("onnx")
def _onnx(e, node, ins):
    return e.add("Selu", ins, alpha=ALPHA, gamma=SCALE)


@selu.implements("onnx_import", names=("Selu",))
def _onnx_import(n, x, *_):
    """ONNX's defaults are the constants in float32, as an attribute holds them."""
    from edgekit.converters.from_torch import Unsupported

    alpha, gamma = np.float32(n.get("alpha", ALPHA)), np.float32(n.get("gamma", SCALE))
    if (alpha, gamma) != (np.float32(ALPHA), np.float32(SCALE)):
        raise Unsupported(f"Selu(alpha={alpha}, gamma={gamma})")
    return n.emit("selu", [x])
