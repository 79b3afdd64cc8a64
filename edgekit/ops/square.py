"""square: ``x * x`` (TFLite's SQUARE). torch's ``x ** 2`` (``pow`` with exponent 2, what
``square`` decomposes to) imports as square, and so does ONNX's ``Pow(x, 2)``, which is how the
writer spells it (a Mul of x by itself would read back as mul)."""

from __future__ import annotations

import numpy as np

from edgekit.ops.pointwise import pointwise

square = pointwise(
    "square", lambda x: x * x, doc="x * x", tflite="SQUARE",
    gpu=lambda torch, x: torch.square(x), grad_x=lambda x, dy: dy * 2 * x)


def _squared(c, x, exponent, what: str):
    """``x ** exponent`` as square; any exponent but a constant 2 is not this op."""
    from edgekit.converters.from_torch import Act, Unsupported

    if hasattr(exponent, "detach"):  # a torch tensor constant
        exponent = exponent.detach().cpu().numpy()
    if isinstance(exponent, Act) or np.size(exponent) != 1 or np.ravel(exponent)[0] != 2:
        raise Unsupported(f"{what} with an exponent other than a constant 2")
    return c.emit("square", [x])


square.implements("torch", names=("square", "square_", "pow"))(
    lambda c, x, exponent=2: _squared(c, x, exponent, "pow"))
square.implements("onnx_import", names=("Pow",))(
    lambda n, x, exponent: _squared(n, x, exponent, "Pow"))


@square.implements("onnx")
def _onnx(e, node, ins):
    return e.add("Pow", [ins[0], e.const(np.float32(2))])
