"""Ops that move values without computing: reshape and concat."""

from __future__ import annotations

import numpy as np

from edgekit.ops import declare
from edgekit.ops.schema import REQUIRED, OpDef, check_axis, fail, prod


def _reshape_shape(s, a):
    target = tuple(a["shape"])
    if any(d < 1 for d in target) or prod(target) != prod(s[0][1:]):
        fail(f"cannot reshape {s[0]} to batch x {list(target)}")
    return (s[0][0], *target)


reshape = declare(OpDef(
    "reshape", (1, 1), {"shape": REQUIRED}, _reshape_shape, quant="first_input",
    reference=lambda x, *, shape: x.reshape(x.shape[0], *shape).astype(np.float32),
    doc="per-sample target shape, batch kept"))


def _concat_shape(s, a):
    axis = check_axis(a["axis"], len(s[0]))
    for t in s[1:]:
        if len(t) != len(s[0]) or any(t[i] != s[0][i] for i in range(len(t)) if i != axis):
            fail(f"concat inputs {s} differ outside axis {axis}")
    return tuple(sum(t[i] for t in s) if i == axis else s[0][i] for i in range(len(s[0])))


concat = declare(OpDef(
    "concat", (1, 64), {"axis": REQUIRED}, _concat_shape, quant="all_inputs",
    reference=lambda *xs, axis: np.concatenate(xs, axis=axis).astype(np.float32),
    doc="join inputs along a (non-batch) axis"))
