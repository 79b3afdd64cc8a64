"""clip: ``min(max(x, min), max)`` with either bound absent, on every backend.

It only moves values, so int8 keeps the input's quantization (as relu6) and clamps the stored
values to the bounds quantized once (``numerics.params.clip_bounds``). TFLite spells it RELU,
RELU6 or RELU_N1_TO_1 where the bounds are theirs, else MAXIMUM/MINIMUM against constants,
which the int8 file holds already quantized to those same bounds: exact either way. Importers
keep clamp(0, 6) as relu6 and clamp(0, none) as relu, the ops the passes fuse into a conv.
"""

from __future__ import annotations

import math

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.ops import declare
from edgekit.ops.schema import OpDef, fail
from edgekit.ops.util import finish


def _bounds_shape(s, a):
    for key in ("min", "max"):
        v = a[key]
        if v is not None and (type(v) not in (int, float) or not math.isfinite(v)):
            fail(f"clip: {key} must be a finite number or absent, got {v!r}")
    if a["min"] is not None and a["max"] is not None and a["min"] > a["max"]:
        fail(f"clip: min {a['min']} is above max {a['max']}")
    return tuple(s[0])


def _reference(x, **a):
    return finish(np.clip(x.astype(np.float64), a["min"], a["max"]))


clip = declare(OpDef("clip", (1, 1), {"min": None, "max": None}, _bounds_shape,
                     quant="first_input", reference=_reference,
                     doc="min(max(x, min), max); an absent bound does not clamp"))


def _float_bounds(a) -> tuple[float, float]:
    return (-np.inf if a["min"] is None else a["min"]), (np.inf if a["max"] is None else a["max"])


# --- edgekit runtime --------------------------------------------------------------------------

@clip.implements("float32")
def _float32(ins, out, **a):
    from edgekit.runtime.kernels import elementwise
    from edgekit.runtime.registry import bind

    return bind(elementwise.clamp, ins[0].reshape(-1), *_float_bounds(a), out.reshape(-1))


@clip.implements("int8")
def _int8(ins, out, *, quant, **a):
    from edgekit.numerics.params import clip_bounds
    from edgekit.runtime.int8 import check_shared
    from edgekit.runtime.kernels import elementwise
    from edgekit.runtime.registry import bind

    check_shared("clip", quant)
    return bind(elementwise.clamp, ins[0].reshape(-1), *clip_bounds(a["min"], a["max"], quant[0]),
                out.reshape(-1))


# --- importers --------------------------------------------------------------------------------

_NAMED = {(0.0, 6.0): "relu6", (0.0, None): "relu"}


def emit_clip(b, x, lo, hi, name: str):
    """``x`` clipped to ``[lo, hi]`` (None: unbounded) as the Graph op it is: relu6, relu, or
    clip."""
    from edgekit.converters.from_torch import Act

    lo = None if lo is None or lo == -math.inf else float(lo)
    hi = None if hi is None or hi == math.inf else float(hi)
    op = _NAMED.get((lo, hi))
    attrs = None if op else {"min": lo, "max": hi}
    return Act(b.node(op or "clip", [x.name], attrs, name=name))


@clip.implements("torch", names=("clamp", "clip", "hardtanh", "clamp_min", "clamp_max"))
def _torch(c, x, *bounds, **kw):
    """aten clamp/clip(x, min, max), hardtanh(x, min_val=-1, max_val=1), clamp_min(x, min),
    clamp_max(x, max); tensor bounds (aten clamp.Tensor) are elementwise maximum then
    minimum."""
    from edgekit.ops.elementwise import arith

    given = dict(zip(("max",) if c.aten == "clamp_max" else ("min", "max"), bounds))
    given.update({key.removesuffix("_val"): value for key, value in kw.items()})
    default = 1.0 if c.aten == "hardtanh" else None
    lo, hi = given.get("min", -default if default else None), given.get("max", default)
    if all(v is None or isinstance(v, (int, float)) for v in (lo, hi)):
        return emit_clip(c.b, x, lo, hi, c.name)
    lo, hi = (v if v is None or not hasattr(v, "detach") else c.const(v, c.aten)
              for v in (lo, hi))
    if lo is not None:
        x = arith(c.b, "maximum", x, lo, c.name if hi is None else f"{c.name}.min")
    return x if hi is None else arith(c.b, "minimum", x, hi, c.name)


@clip.implements("onnx_import", names=("Clip",))
def _onnx_import(n, x, lo=None, hi=None):
    """Clip's bounds are inputs (attributes before opset 11) known at import time."""
    lo = n.get("min") if n.opset < 11 else lo
    hi = n.get("max") if n.opset < 11 else hi
    lo, hi = (None if v is None else _scalar(n.const(v, "Clip with computed bounds"), "Clip")
              for v in (lo, hi))
    return emit_clip(n.b, x, lo, hi, n.name)


def _scalar(value, what: str) -> float:
    """A bound given as one number (a scalar or one-element tensor)."""
    try:
        array = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise EdgekitError(f"{what} bound {str(value)[:40]!r} is not a number") from None
    if array.size != 1:
        raise EdgekitError(f"{what} bound of shape {list(array.shape)} is not one number")
    return float(array.reshape(-1)[0])


# --- writers ----------------------------------------------------------------------------------

_TFLITE_NAMED = {(0.0, 6.0): "RELU6", (0.0, None): "RELU", (-1.0, 1.0): "RELU_N1_TO_1"}


@clip.implements("tflite")
def _tflite(w, node):
    """RELU/RELU6 (RELU_N1_TO_1 in float32: tflite-micro has no int8 kernel for it) where the
    bounds are theirs; else MAXIMUM then MINIMUM against constants in the input's type and
    quantization (int8: the bounds of ``clip_bounds``)."""
    from edgekit.numerics.params import clip_bounds

    lo, hi = node.attrs["min"], node.attrs["max"]
    code = _TFLITE_NAMED.get((lo, hi))
    if code and not (w.int8 and code == "RELU_N1_TO_1"):
        w.unary(node, code)
        return
    layout = w.layout[node.inputs[0]]
    x = w.value(node.inputs[0], layout)
    q = w.graph.tensors[node.inputs[0]].quant
    values = clip_bounds(lo, hi, q) if w.int8 else (lo, hi)
    dtype = np.int8 if w.int8 else np.float32
    steps = [(code, v) for code, v in (("MAXIMUM", lo), ("MINIMUM", hi)) if v is not None]
    for k, (code, _) in enumerate(steps):
        bound = values[0] if code == "MAXIMUM" else values[1]
        const = w.constant(f"{node.outputs[0]}/{code.lower()}", np.array([bound], dtype),
                           w.tensors[x].quantization)
        y = (w.output(node, layout) if k == len(steps) - 1
             else w.derived(x, w.shape(x), f"/{code.lower()}"))
        w.op(code, [x, const], [y], w.options("MaximumMinimum"))
        x = y


@clip.implements("onnx")
def _onnx(e, node, ins):
    bounds = [e.const(np.float32(v)) if v is not None else ""
              for v in (node.attrs["min"], node.attrs["max"])]
    while bounds and bounds[-1] == "":
        bounds.pop()
    return e.add("Clip", [ins[0], *bounds])


@clip.implements("c")
def _c(w, i, node):
    from edgekit.numerics.params import clip_bounds

    lo, hi = clip_bounds(node.attrs["min"], node.attrs["max"], w.quant(node)[0])
    return (f"ek_clamp_i8({w.size(node.outputs[0])}, {lo}, {hi}, {w.at(node.inputs[0])}, "
            f"{w.at(node.outputs[0])});")


# --- gpu target (torch) and on-device learning ------------------------------------------------

@clip.implements("gpu")
def _gpu(x, **a):
    import torch

    return torch.clamp(x, a["min"], a["max"])


@clip.implements("learn")
def _learn(blocks, graph, node, where):
    """The block's activation clamps; its derivative is 1 strictly inside the bounds."""
    from edgekit.learn.blocks import Pointwise, add_pointwise

    lo, hi = _float_bounds(node.attrs)

    def forward(x, out):
        np.clip(x, lo, hi, out=out)

    def backward(y, dy, out):
        np.multiply(dy, (y > lo) & (y < hi), out=out)

    add_pointwise(blocks, Pointwise(forward, backward), where)


from edgekit.ops.spiking import no_spiking_form  # noqa: E402

no_spiking_form(clip, "spiking Graphs have no activations: conversion turns them into neurons")
