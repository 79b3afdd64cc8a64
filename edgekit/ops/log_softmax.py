"""log_softmax along one (non-batch) axis, with every backend's implementation.

int8 is TFLite's LOG_SOFTMAX as tflite-micro computes it, bit for bit: fixed-point exp and
log (``runtime.kernels.log_softmax``), its output quantization fixed at scale 16/256, zero
point 127 (``LOG_SOFTMAX_QUANT``). TFLite works on the last axis, so its
writer lays the tensor out with the Graph's axis last, as softmax's does.
"""

from __future__ import annotations

import numpy as np

from edgekit.ops import declare
from edgekit.ops.schema import OpDef, check_axis, prod
from edgekit.ops.util import around_axis, axis_extents, finish

# TFLite's int8 LOG_SOFTMAX output quantization, fixed (log_softmax.cc: 16/256, 127)
LOG_SOFTMAX_QUANT = (16 / 256, 127)


def _shape(s, a):
    check_axis(a["axis"], len(s[0]))
    return tuple(s[0])


def _reference(x, *, axis):
    x = x.astype(np.float64)
    shifted = x - x.max(axis=axis, keepdims=True)
    return finish(shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True)))


log_softmax = declare(OpDef("log_softmax", (1, 1), {"axis": -1}, _shape,
                            lambda i, o, a: 2 * prod(o), quant=LOG_SOFTMAX_QUANT,
                            reference=_reference, doc="x - log(sum(exp(x))) along axis"))


# --- edgekit runtime --------------------------------------------------------------------------

@log_softmax.implements("float32")
def _float32(ins, out, *, axis):
    from edgekit.runtime.kernels import log_softmax as kernels
    from edgekit.runtime.registry import bind

    return bind(kernels.log_softmax, around_axis(ins[0], axis), around_axis(out, axis))


@log_softmax.implements("int8")
def _int8(ins, out, *, axis, quant):
    from edgekit.errors import EdgekitError
    from edgekit.numerics.params import log_softmax_params
    from edgekit.runtime.kernels import log_softmax as kernels
    from edgekit.runtime.registry import bind

    q_out = quant[-1]
    if (float(q_out.scale[0]), int(q_out.zero_point[0])) != LOG_SOFTMAX_QUANT:
        raise EdgekitError(f"int8 log_softmax needs TFLite's output quantization (scale, zero "
                           f"point) {LOG_SOFTMAX_QUANT}, got {q_out.to_json()}")
    p = log_softmax_params(quant[0])
    return bind(kernels.log_softmax_i8, around_axis(ins[0], axis), p.mult, p.left_shift,
                p.reverse_mult, p.reverse_shift, p.diff_min, around_axis(out, axis))


# --- importers --------------------------------------------------------------------------------

@log_softmax.implements("torch", names=("log_softmax", "_log_softmax"))
def _torch(c, x, dim, *_, **__):
    return c.emit("log_softmax", [x], {"axis": int(dim) % len(c.b.shape(x.name))})


@log_softmax.implements("onnx_import", names=("LogSoftmax",))
def _onnx_import(n, x):
    """Before opset 13 LogSoftmax flattens from ``axis`` (default 1) on: the same as ours only
    when that is a single (last) axis."""
    from edgekit.converters.from_torch import Unsupported

    rank = len(n.shape(x))
    axis = n.axis(-1 if n.opset >= 13 else 1, rank)
    if n.opset < 13 and axis != rank - 1:
        raise Unsupported(f"LogSoftmax(axis={axis}) of opset {n.opset} over several axes")
    return n.emit("log_softmax", [x], {"axis": axis})


# --- writers ----------------------------------------------------------------------------------

@log_softmax.implements("tflite")
def _tflite(w, node):
    """LOG_SOFTMAX works on the last TFLite axis: use a layout that puts the Graph's axis
    there."""
    layout = w.layout[node.inputs[0]]
    axis = node.attrs["axis"] % len(layout)
    if layout[-1] != axis:
        layout = (*(d for d in range(len(layout)) if d != axis), axis)
    w.op("LOG_SOFTMAX", [w.value(node.inputs[0], layout)], [w.output(node, layout)])


@log_softmax.implements("onnx")
def _onnx(e, node, ins):
    return e.add("LogSoftmax", ins, axis=node.attrs["axis"])


@log_softmax.implements("c")
def _c(w, i, node):
    """``ek_log_softmax_i8`` over the (outer, n, inner) view around the axis."""
    from dataclasses import asdict

    from edgekit.numerics.params import log_softmax_params

    fields = dict(axis_extents(w.shape(node.inputs[0]), node.attrs["axis"]),
                  **asdict(log_softmax_params(w.quant(node)[0])))
    return f"ek_log_softmax_i8({w.struct('ek_log_softmax_t', i, fields)}, " \
           f"{w.at(node.inputs[0])}, {w.at(node.outputs[0])});"


# --- gpu target (torch) and on-device learning ------------------------------------------------

@log_softmax.implements("gpu")
def _gpu(x, *, axis):
    import torch

    return torch.log_softmax(x, dim=axis)


log_softmax.unsupported("learn", "edgekit.learn has no gradient rule for log_softmax (training "
                                 "reads the logits; end the graph with softmax or the logits)")


# --- spiking backends -------------------------------------------------------------------------

from edgekit.ops.spiking import no_spiking_form  # noqa: E402

no_spiking_form(log_softmax, "converters.snn.to_snn refuses log_softmax: it has no rate-coded "
                             "spiking equivalent")
