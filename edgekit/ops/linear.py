"""linear: y = x @ W.T + b over the last axis (a fully connected layer)."""

from __future__ import annotations

import numpy as np

from edgekit.ops import declare
from edgekit.ops.schema import OpDef, fail, prod
from edgekit.ops.util import finish


def _shape(s, a):
    x, w = s[0], s[1]
    if len(w) != 2 or len(x) < 2 or x[-1] != w[1]:
        fail(f"linear weight {w} does not match input {x}")
    if len(s) > 2 and tuple(s[2]) != (w[0],):
        fail(f"bias shape {s[2]} does not match {w[0]} outputs")
    return (*x[:-1], w[0])


def _reference(x, w, b=None, *, activation):
    y = x.astype(np.float64) @ w.astype(np.float64).T
    return finish(y if b is None else y + b, activation)


linear = declare(OpDef(
    "linear", (2, 3), {"activation": "none"}, _shape, lambda i, o, a: prod(o) * i[1][1],
    weight_inputs=(1, 2), int8_weights=True, reference=_reference,
    doc="y = x @ W.T + b over the last axis; W is [out, in]"))
