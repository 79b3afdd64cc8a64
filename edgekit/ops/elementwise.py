"""Binary elementwise ops: add (with a fused activation) and mul; the second operand
broadcasts to the first's shape."""

from __future__ import annotations

import numpy as np

from edgekit.ops import declare
from edgekit.ops.schema import OpDef, elementwise_macs, fail
from edgekit.ops.util import finish


def broadcast_to_first(s, a):
    x, y = s
    if len(y) > len(x):
        fail(f"second operand {y} has higher rank than the first {x}")
    y = (1,) * (len(x) - len(y)) + tuple(y)
    for dx, dy in zip(x, y):
        if dy not in (1, dx):
            fail(f"shapes {x} and {s[1]} do not broadcast to the first operand's shape")
    return tuple(x)


add = declare(OpDef(
    "add", (2, 2), {"activation": "none"}, broadcast_to_first,
    reference=lambda x, y, *, activation: finish(x.astype(np.float64) + y, activation),
    doc="elementwise x + y; y broadcasts to x's shape"))

mul = declare(OpDef(
    "mul", (2, 2), {}, broadcast_to_first, elementwise_macs,
    reference=lambda x, y: finish(x.astype(np.float64) * y),
    doc="elementwise x * y; y broadcasts to x"))
