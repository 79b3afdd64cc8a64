"""hardsigmoid: ``relu6(x + 3) / 6`` (MobileNetV3's gates). ONNX's HardSigmoid is
``max(0, min(1, alpha * x + beta))``, this op with alpha 1/6 and beta 1/2 (not its defaults);
TFLite has no builtin, so its float form is ADD, RELU6 and MUL."""

from __future__ import annotations

import numpy as np

from edgekit.ops.pointwise import pointwise, where

hardsigmoid = pointwise(
    "hardsigmoid", lambda x: np.minimum(np.maximum(x + 3, 0), 6) / 6, doc="relu6(x + 3) / 6",
    torch=("hardsigmoid", "hardsigmoid_"),
    tflite=lambda c, x: c.result("MUL", c.op("RELU6", c.op("ADD", x, 3.0)), 1 / 6),
    gpu=lambda torch, x: torch.nn.functional.hardsigmoid(x),
    grad=lambda y, dy: dy * where((y > 0) & (y < 1), 1 / 6, 0.0))


@hardsigmoid.implements("onnx")
def _onnx(e, node, ins):
    return e.add("HardSigmoid", ins, alpha=1 / 6, beta=0.5)


@hardsigmoid.implements("onnx_import", names=("HardSigmoid",))
def _onnx_import(n, x, *_):
    from edgekit.converters.from_torch import Unsupported

    alpha, beta = (np.float32(n.get(k, default)) for k, default in (("alpha", 0.2), ("beta", 0.5)))
    if (alpha, beta) != (np.float32(1 / 6), np.float32(0.5)):
        raise Unsupported(f"HardSigmoid(alpha={alpha}, beta={beta})")
    return n.emit("hardsigmoid", [x])
