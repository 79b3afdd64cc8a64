"""Reductions over axes: reduce_mean, reduce_sum and reduce_max, with every backend's
implementation.

``axes`` are any non-empty set of non-batch axes (negative ones count from the end; each
consumer normalizes them with ``reduced_axes``); ``keepdims`` keeps them as 1. On int8 they are
TFLite's MEAN, SUM and REDUCE_MAX as tflite-micro computes them: the mean and the sum add the
int8 values in int32 and requantize once, the 1/count of a mean folded into the multiplier
(``numerics.params.reduce_params``); the max moves values, so it keeps its input's
quantization. Mean over H and W of NCHW keeping them is ``global_avgpool``'s (TFLite's
AVERAGE_POOL_2D); the importers give that op for it, as they always have.
"""

from __future__ import annotations

import numpy as np

from edgekit.ops import declare
from edgekit.ops.schema import REQUIRED, OpDef, fail, prod
from edgekit.ops.util import finish


def reduced_axes(op: str, axes, rank: int) -> tuple[int, ...]:
    """``axes`` of a rank-``rank`` input as sorted non-negative axes; the batch axis, an axis
    out of range, a repeated axis or an empty list is an error."""
    if not isinstance(axes, list) or not axes or any(type(a) is not int for a in axes):
        fail(f"{op}: attribute 'axes' must be a non-empty list of ints, got {axes!r}")
    if any(not -rank <= a < rank for a in axes):
        fail(f"{op}: axes {axes} out of range for rank {rank}")
    norm = sorted(a % rank for a in axes)
    if len(set(norm)) != len(norm):
        fail(f"{op}: axes {axes} name an axis twice")
    if norm[0] == 0:
        fail(f"{op} over the batch axis (axes {axes}) is not supported: the batch is the free "
             "leading dimension, each sample is computed on its own")
    return tuple(norm)


def _shape_rule(op: str):
    def infer(s, a):
        x = tuple(s[0])
        axes = reduced_axes(op, a["axes"], len(x))
        if a["keepdims"]:
            return tuple(1 if i in axes else d for i, d in enumerate(x))
        return tuple(d for i, d in enumerate(x) if i not in axes)

    return infer


def _reference(fn):
    def reference(x, *, axes, keepdims):
        axes = reduced_axes("reduction", axes, x.ndim)
        return finish(fn(x.astype(np.float64), axis=axes, keepdims=keepdims))

    return reference


def _declare(name: str, fn, quant: str, doc: str) -> OpDef:
    return declare(OpDef(name, (1, 1), {"axes": REQUIRED, "keepdims": False}, _shape_rule(name),
                         lambda i, o, a: prod(i[0]), quant=quant, reference=_reference(fn),
                         doc=doc))


reduce_mean = _declare("reduce_mean", np.mean, "calibrated",
                       "mean over the (non-batch) axes, kept as 1 with keepdims")
reduce_sum = _declare("reduce_sum", np.sum, "calibrated",
                      "sum over the (non-batch) axes, kept as 1 with keepdims")
reduce_max = _declare("reduce_max", np.max, "first_input",
                      "max over the (non-batch) axes, kept as 1 with keepdims")
REDUCTIONS = (reduce_mean, reduce_sum, reduce_max)
_NUMPY = {"reduce_mean": np.mean, "reduce_sum": np.sum, "reduce_max": np.max}


def _kept(x: np.ndarray, out: np.ndarray, op: str, axes) -> tuple[tuple[int, ...], np.ndarray]:
    """The normalized axes and ``out`` viewed with the reduced axes kept as 1."""
    axes = reduced_axes(op, axes, x.ndim)
    return axes, out.reshape([1 if i in axes else d for i, d in enumerate(x.shape)])


# --- edgekit runtime --------------------------------------------------------------------------

def _float32(op: OpDef) -> None:
    fn = _NUMPY[op.name]

    @op.implements("float32")
    def _(ins, out, *, axes, keepdims):
        """numpy's reduction straight into the output (float32, pairwise sums)."""
        from functools import partial

        axes, view = _kept(ins[0], out, op.name, axes)
        return partial(fn, ins[0], axis=axes, out=view, keepdims=True)


for _op in REDUCTIONS:
    _float32(_op)


def _sums_scratch(shapes, out_shape, **_) -> int:
    from edgekit.runtime.int8 import scratch_bytes

    return scratch_bytes((out_shape, np.int32))


def _mean_or_sum_int8(op: OpDef) -> None:
    @op.implements("int8", scratch=_sums_scratch)
    def _(ins, out, *, axes, keepdims, quant, scratch):
        """The int32 sums (exact in any order), then tflite-micro's requantization."""
        from edgekit.numerics.params import reduce_params
        from edgekit.runtime.int8 import carve
        from edgekit.runtime.kernels import int8_reduce
        from edgekit.runtime.registry import sequence

        x = ins[0]
        axes, view = _kept(x, out, op.name, axes)
        (sums,) = carve(scratch, (view.shape, np.int32))
        p = reduce_params(quant[0], quant[-1], prod(x.shape[a] for a in axes),
                          mean=op is reduce_mean)
        return sequence([(np.sum, x, axes, np.int32, sums, True),
                         (int8_reduce.requantize_sums, sums.reshape(-1), p.offset, p.mult,
                          p.shift, p.zo, out.reshape(-1))])


for _op in (reduce_mean, reduce_sum):
    _mean_or_sum_int8(_op)


@reduce_max.implements("int8")
def _max_int8(ins, out, *, axes, keepdims, quant):
    from functools import partial

    from edgekit.runtime.int8 import check_shared

    check_shared("reduce_max", quant)
    axes, view = _kept(ins[0], out, "reduce_max", axes)
    return partial(np.max, ins[0], axis=axes, out=view, keepdims=True)


# --- importers --------------------------------------------------------------------------------

def emit_reduction(c, op: str, x, axes, keepdims: bool):
    """``op`` over ``axes`` (None or empty: every axis, which takes in the batch and is
    refused) from either importer's call. A mean over H and W of NCHW is ``global_avgpool``
    (then a reshape to (N, C) without keepdims), as the importers have always given it."""
    rank = len(c.b.shape(x.name))
    axes = list(range(rank)) if axes is None or len(axes) == 0 else [int(a) for a in axes]
    norm = reduced_axes(op, axes, rank)
    if op == "reduce_mean" and rank == 4 and norm == (2, 3):
        y = c.emit("global_avgpool", [x])
        return y if keepdims else c.emit("reshape", [y], {"shape": [c.b.shape(x.name)[1]]})
    return c.emit(op, [x], {"axes": list(norm), "keepdims": bool(keepdims)})


@reduce_mean.implements("torch", names=("mean",))
def _mean_torch(c, x, dim=None, keepdim=False, dtype=None):
    """aten.mean.dim; aten.mean.default (no dim) averages the batch too and is refused."""
    return emit_reduction(c, "reduce_mean", x, dim, keepdim)


@reduce_sum.implements("torch", names=("sum",))
def _sum_torch(c, x, dim=None, keepdim=False, dtype=None):
    return emit_reduction(c, "reduce_sum", x, dim, keepdim)


@reduce_max.implements("torch", names=("amax", "max"))
def _max_torch(c, x, dim=None, keepdim=False):
    """amax over dims, or max.dim's values (its indices must be unused: the Graph has no
    argmax); max.default (every axis) takes in the batch, max.other is elementwise."""
    import operator

    from edgekit.converters.from_torch import Act, Unsupported

    if c.aten == "amax":
        return emit_reduction(c, "reduce_max", x, dim, keepdim)
    if dim is None:
        return emit_reduction(c, "reduce_max", x, None, False)
    if isinstance(dim, Act) or not isinstance(dim, int):
        raise Unsupported("max(x, other) (elementwise)")
    if any(u.target is operator.getitem and u.args[1] == 1 and u.users for u in c.node.users):
        raise Unsupported("max.dim with its indices used (the Graph has no argmax)")
    return emit_reduction(c, "reduce_max", x, [dim], keepdim), None


def _onnx_import(op: OpDef, onnx_type: str) -> None:
    @op.implements("onnx_import", names=(onnx_type,))
    def _(n, x, axes=None):
        """Axes as an attribute (before opset 18; ReduceSum's before 13) or as a second input;
        none (with noop_with_empty_axes=0) means every axis, the batch too: refused."""
        from edgekit.converters.from_torch import Unsupported

        if axes is None:
            axes = n.get("axes")
        else:
            axes = np.asarray(n.const(axes, f"{n.op} with computed axes")).reshape(-1).tolist()
        if not axes and n.get("noop_with_empty_axes", 0):
            raise Unsupported(f"{n.op}(noop_with_empty_axes=1) without axes (an identity)")
        return emit_reduction(n, op.name, x, axes, bool(n.get("keepdims", 1)))


for _op, _type in ((reduce_mean, "ReduceMean"), (reduce_sum, "ReduceSum"),
                   (reduce_max, "ReduceMax")):
    _onnx_import(_op, _type)


# --- writers ----------------------------------------------------------------------------------

def _tflite(op: OpDef, code: str) -> None:
    @op.implements("tflite")
    def _(w, node):
        """``code`` in the input's layout, the axes given in that layout; without keepdims the
        output keeps the remaining axes in the same order."""
        layout = w.layout[node.inputs[0]]
        axes = reduced_axes(op.name, node.attrs["axes"], len(layout))
        keep = node.attrs["keepdims"]
        out_layout = layout if keep else tuple(d - sum(a < d for a in axes) for d in layout
                                               if d not in axes)
        w.op(code, [w.value(node.inputs[0], layout), w.int32([layout.index(a) for a in axes])],
             [w.output(node, out_layout)], w.options("Reducer", keepDims=keep))


for _op, _code in ((reduce_mean, "MEAN"), (reduce_sum, "SUM"), (reduce_max, "REDUCE_MAX")):
    _tflite(_op, _code)


def _axes_of(e, node) -> list[int]:
    rank = len(e.graph.tensors[node.inputs[0]].shape)
    return list(reduced_axes(node.op, node.attrs["axes"], rank))


@reduce_mean.implements("onnx")
def _mean_onnx(e, node, ins):
    return e.add("ReduceMean", ins, axes=_axes_of(e, node), keepdims=int(node.attrs["keepdims"]))


@reduce_max.implements("onnx")
def _max_onnx(e, node, ins):
    return e.add("ReduceMax", ins, axes=_axes_of(e, node), keepdims=int(node.attrs["keepdims"]))


@reduce_sum.implements("onnx")
def _sum_onnx(e, node, ins):
    """Opset 13 on: the axes are an input."""
    axes = e.const(np.asarray(_axes_of(e, node), np.int64))
    return e.add("ReduceSum", [ins[0], axes], keepdims=int(node.attrs["keepdims"]))


def _c_fields(w, node) -> dict:
    """``ek_reduce_t``'s walk of one sample: the kept axes (the batch of 1 among them, so
    there is always one) and the reduced axes, each with its size and input stride."""
    from edgekit.converters.to_c import MAX_DIMS
    from edgekit.errors import EdgekitError

    xs = w.shape(node.inputs[0])
    if len(xs) > MAX_DIMS:
        raise EdgekitError(f"the firmware reduces tensors of up to {MAX_DIMS} axes, "
                           f"{node.op} has {len(xs)}")
    axes = reduced_axes(node.op, node.attrs["axes"], len(xs))
    strides = [prod(xs[i + 1:]) for i in range(len(xs))]
    kept = [i for i in range(len(xs)) if i not in axes]
    return dict(n_out=prod(xs[i] for i in kept), n_red=prod(xs[i] for i in axes),
                out_rank=len(kept), red_rank=len(axes), out_dims=[xs[i] for i in kept],
                out_strides=[strides[i] for i in kept], red_dims=[xs[i] for i in axes],
                red_strides=[strides[i] for i in axes])


def _c_mean_or_sum(op: OpDef) -> None:
    @op.implements("c")
    def _(w, i, node):
        from dataclasses import asdict

        from edgekit.numerics.params import reduce_params

        fields = _c_fields(w, node)
        q_in, q_out = w.quant(node)
        p = reduce_params(q_in, q_out, fields["n_red"], mean=op is reduce_mean)
        struct = w.struct("ek_reduce_t", i, {**fields, **asdict(p)})
        return f"ek_reduce_sum_i8({struct}, {w.at(node.inputs[0])}, {w.at(node.outputs[0])});"


for _op in (reduce_mean, reduce_sum):
    _c_mean_or_sum(_op)


@reduce_max.implements("c")
def _max_c(w, i, node):
    struct = w.struct("ek_reduce_t", i, _c_fields(w, node))
    return f"ek_reduce_max_i8({struct}, {w.at(node.inputs[0])}, {w.at(node.outputs[0])});"


# --- gpu target (torch) and on-device learning ------------------------------------------------

def _gpu(op: OpDef, fn: str) -> None:
    @op.implements("gpu")
    def _(x, *, axes, keepdims):
        import torch

        return getattr(torch, fn)(x, dim=reduced_axes(op.name, axes, x.ndim), keepdim=keepdims)


for _op, _fn in ((reduce_mean, "mean"), (reduce_sum, "sum"), (reduce_max, "amax")):
    _gpu(_op, _fn)
    _op.unsupported("learn", f"edgekit.learn has no gradient rule for {_op.name} (it trains "
                             "sequential chains of conv/linear blocks; global_avgpool joins them)")


# --- spiking backends -------------------------------------------------------------------------

from edgekit.ops.spiking import no_spiking_form  # noqa: E402

for _op in (reduce_mean, reduce_sum):
    no_spiking_form(_op, f"converters.snn.to_snn refuses {_op.name}: spiking Graphs average "
                         "over H and W with global_avgpool (the importers give it for that mean)")
no_spiking_form(reduce_max, "converters.snn.to_snn refuses reduce_max: a max over spike trains "
                            "is not the max of the rates")
