"""softmax and layernorm: ops that normalize over axes (int8 kernels compute them in float
between a dequantize and a quantize, docs/quantized-graph.md)."""

from __future__ import annotations

import numpy as np

from edgekit.ops import declare
from edgekit.ops.schema import OpDef, check_axis, fail, prod
from edgekit.ops.util import finish


def _softmax_shape(s, a):
    check_axis(a["axis"], len(s[0]))
    return tuple(s[0])


def _softmax_reference(x, *, axis):
    e = np.exp(x.astype(np.float64) - x.max(axis=axis, keepdims=True))
    return finish(e / e.sum(axis=axis, keepdims=True))


softmax = declare(OpDef("softmax", (1, 1), {"axis": -1}, _softmax_shape,
                        quant=(1 / 256, -128),  # TFLite's fixed output quantization
                        reference=_softmax_reference, doc="exp(x) / sum(exp(x)) along axis"))


def _layernorm_shape(s, a):
    x, g, b = s
    k = a["normalized_ndim"]
    if not 1 <= k < len(x) or tuple(g) != tuple(x[-k:]) or tuple(b) != tuple(x[-k:]):
        fail(f"layernorm over {k} axes of {x} needs gamma/beta of shape {x[-k:]}, got {g}, {b}")
    return tuple(x)


def _layernorm_reference(x, gamma, beta, *, normalized_ndim, eps):
    axes = tuple(range(x.ndim - normalized_ndim, x.ndim))
    x = x.astype(np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return finish((x - mean) / np.sqrt(var + eps) * gamma + beta)


layernorm = declare(OpDef(
    "layernorm", (3, 3), {"normalized_ndim": 1, "eps": 1e-5}, _layernorm_shape,
    lambda i, o, a: 2 * prod(o), weight_inputs=(1, 2), reference=_layernorm_reference,
    doc="LayerNorm over the last normalized_ndim axes"))
