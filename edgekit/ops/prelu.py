"""prelu: ``x if x >= 0 else slope * x`` with a learned slope per channel (axis 1) or one for
all, on every backend.

The slope is a weight (``weight_inputs``): a param of shape (C,) or (1,), kept in float32 by
int8 quantization (as layernorm's gamma) and quantized once by ``numerics.params.prelu_params``
to the int8 slope and two multipliers of TFLite's PRELU, which the runtime, the TFLite writer
and the C writer all read.
"""

from __future__ import annotations

import numpy as np

from edgekit.ops import declare
from edgekit.ops.schema import OpDef, fail, prod
from edgekit.ops.util import finish


def _shape(s, a):
    x, slope = s
    if len(x) < 2:
        fail(f"prelu needs a channel axis (axis 1), got input {tuple(x)}")
    if len(slope) != 1 or slope[0] not in (1, x[1]):
        fail(f"prelu's slope must have shape ({x[1]},) (one per channel) or (1,), got "
             f"{tuple(slope)}")
    return tuple(x)


def channel_shape(x_shape, slope) -> tuple[int, ...]:
    """The slope's shape broadcast against an input of ``x_shape``: along axis 1."""
    return (1, slope.size, *[1] * (len(x_shape) - 2))


def _reference(x, slope):
    x = x.astype(np.float64)
    return finish(np.where(x >= 0, x, x * slope.reshape(channel_shape(x.shape, slope))))


prelu = declare(OpDef("prelu", (2, 2), {}, _shape, lambda i, o, a: prod(o),
                      weight_inputs=(1,), reference=_reference,
                      doc="x if x >= 0 else slope * x; slope (C,) per channel (axis 1) or (1,)"))


def _params(quant, slope):
    from edgekit.numerics.params import prelu_params

    return prelu_params(quant[0], quant[-1], slope)


# --- edgekit runtime --------------------------------------------------------------------------

@prelu.implements("float32")
def _float32(ins, out):
    from edgekit.ops.elementwise import broadcast_layout
    from edgekit.runtime.kernels import elementwise
    from edgekit.runtime.registry import bind

    x, slope = ins
    layout = broadcast_layout(out.shape, x.shape, channel_shape(x.shape, slope))
    return bind(elementwise.prelu, x.reshape(-1), slope.reshape(-1), *layout, out.reshape(-1))


@prelu.implements("int8")
def _int8(ins, out, *, quant):
    from edgekit.ops.elementwise import broadcast_layout
    from edgekit.runtime.kernels import int8_elementwise
    from edgekit.runtime.registry import bind

    x, slope = ins
    p = _params(quant, slope)
    layout = broadcast_layout(out.shape, x.shape, channel_shape(x.shape, slope))
    return bind(int8_elementwise.prelu, x.reshape(-1), p.alpha, *layout, p.zx, p.zo, p.m_id,
                p.s_id, p.m_alpha, p.s_alpha, out.reshape(-1))


# --- importers --------------------------------------------------------------------------------

@prelu.implements("torch", names=("prelu", "_prelu_kernel"))
def _torch(c, x, weight):
    """nn.PReLU's weight: (C,) or (1,)."""
    return c.emit("prelu", [x, c.param(c.const(weight, "prelu").reshape(-1), "slope")])


@prelu.implements("onnx_import", names=("PRelu",))
def _onnx_import(n, x, slope):
    """ONNX's slope broadcasts as numpy: it must vary along axis 1 only (or not at all)."""
    from edgekit.converters.from_torch import Unsupported

    slope = np.asarray(n.const(slope, "PRelu with a computed slope"), np.float32)
    rank = len(n.b.shape(x.name))
    padded = slope.reshape((1,) * (rank - slope.ndim) + slope.shape) if slope.ndim <= rank \
        else slope
    if slope.ndim > rank or any(d != 1 for i, d in enumerate(padded.shape) if i != 1):
        raise Unsupported(f"PRelu with a slope of shape {list(slope.shape)} (one per channel "
                          "or one in all is supported)")
    return n.emit("prelu", [x, n.param(padded.reshape(-1), "slope")])


# --- writers ----------------------------------------------------------------------------------

@prelu.implements("tflite")
def _tflite(w, node):
    """PRELU with the slope along the channel axis of the input's layout (int8: the slope of
    ``prelu_params``, symmetric per tensor)."""
    x_name, slope_name = node.inputs
    layout = w.layout[x_name]
    slope = w.graph.params[slope_name]
    shape = [channel_shape(w.graph.tensors[x_name].shape, slope)[a] for a in layout]
    if w.int8:
        p = _params([w.graph.tensors[n].quant for n in (x_name, node.outputs[0])], slope)
        alpha = w.constant(slope_name, p.alpha.reshape(shape),
                           w.quant(_symmetric(p.alpha_scale)))
    else:
        alpha = w.constant(slope_name, slope.reshape(shape))
    w.op("PRELU", [w.value(x_name, layout), alpha], [w.output(node, layout)])


def _symmetric(scale: float):
    from edgekit.graph import QuantParams

    return QuantParams([scale], [0])


@prelu.implements("onnx")
def _onnx(e, node, ins):
    """PRelu with the slope as (C, 1, ...) (ONNX broadcasts it from the right); int8 Graphs use
    the slope the int8 kernels use (``prelu_params``), dequantized."""
    x_name, slope_name = node.inputs
    slope = e.graph.params[slope_name]
    if e.int8:
        p = _params([e.graph.tensors[n].quant for n in (x_name, node.outputs[0])], slope)
        slope = p.alpha.astype(np.float32) * np.float32(p.alpha_scale)
    shape = channel_shape(e.graph.tensors[x_name].shape, slope)[1:]
    return e.add("PRelu", [ins[0], e.const(np.asarray(slope, np.float32).reshape(shape))])


@prelu.implements("c")
def _c(w, i, node):
    from edgekit.ops.elementwise import c_binary

    x_name, slope_name = node.inputs
    slope = w.graph.params[slope_name]
    p = _params(w.quant(node), slope)
    alpha = w.array("int8_t", p.alpha)
    return c_binary(w, i, node, "ek_prelu",
                    dict(zx=p.zx, zy=0, zo=p.zo, lo=-128, hi=127, mult=(p.m_id, p.m_alpha, 0),
                         shift=(p.s_id, p.s_alpha, 0)),
                    y=(channel_shape(w.shape(x_name), slope), alpha))


# --- gpu target (torch) and on-device learning ------------------------------------------------

@prelu.implements("gpu")
def _gpu(x, slope):
    import torch.nn.functional as F

    return F.prelu(x, slope)


prelu.unsupported("learn", "edgekit.learn's activations take one slope per layer; prelu learns "
                           "one per channel")

from edgekit.ops.spiking import no_spiking_form  # noqa: E402

no_spiking_form(prelu, "spiking Graphs have no activations: conversion turns them into neurons")
