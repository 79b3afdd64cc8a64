"""matmul: the batched matrix product of two activations, ``(N, ..., M, K) @ (N, ..., K, P)``,
with the dims between the batch and the last two broadcasting as numpy's do.

Its int8 form is TFLite's BATCH_MATMUL as tflite-micro computes it: exact int32 sums of
``(x - zx) * (y - zy)`` and one output multiplier (``numerics.params.matmul_params``, read by
the runtime and the C writer). The importers own torch's matmul, bmm, mm and einsum and ONNX's
MatMul: a product of two activations becomes this op, a product with a constant 2-D right side
the ``linear`` layer it is (its weight the transposed matrix; that is how core ATen and ONNX
spell a bias-free fully connected layer).
"""

from __future__ import annotations

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.ops import declare
from edgekit.ops.schema import OpDef, fail, prod
from edgekit.ops.util import finish

TFLITE_MAX_RANK = 5  # BATCH_MATMUL takes operands of rank 2 to 5


def _shape(s, a):
    x, y = s
    if len(x) != len(y) or len(x) < 3:
        fail(f"matmul multiplies two tensors of one rank >= 3, (batch, ..., M, K) @ (batch, "
             f"..., K, P); got {x} and {y}")
    if x[0] != y[0]:
        fail(f"matmul: {x} and {y} differ in the batch (first) dim")
    if x[-1] != y[-2]:
        fail(f"matmul: {x} @ {y} sums over {x[-1]} values of one and {y[-2]} of the other")
    try:
        lead = np.broadcast_shapes(tuple(x[:-2]), tuple(y[:-2]))
    except ValueError:
        fail(f"matmul: the leading dims of {x} and {y} do not broadcast")
    return (*lead, x[-2], y[-1])


matmul = declare(OpDef(
    "matmul", (2, 2), {}, _shape, lambda i, o, a: prod(o) * i[0][-1],
    reference=lambda x, y: finish(x.astype(np.float64) @ y.astype(np.float64)),
    doc="batched x @ y over the last two axes; the axes between batch and those broadcast"))


def broadcast_index(x_shape, y_shape) -> tuple[np.ndarray, np.ndarray]:
    """For each matrix of one sample's output (its dims between the batch and the last two, in
    order), the index of the matrix of x and of y it multiplies (int32: the C writer's arrays
    too)."""
    xm, ym = tuple(x_shape[1:-2]), tuple(y_shape[1:-2])
    lead = np.broadcast_shapes(xm, ym)
    return tuple(np.broadcast_to(np.arange(prod(m)).reshape(m), lead).reshape(-1).astype(np.int32)
                 for m in (xm, ym))


def _matrices(a: np.ndarray) -> np.ndarray:
    """A runtime array as (N, matrices per sample, rows, columns)."""
    return a.reshape(a.shape[0], -1, *a.shape[-2:])


# --- edgekit runtime --------------------------------------------------------------------------

@matmul.implements("float32")
def _float32(ins, out):
    from edgekit.runtime.registry import bind

    return bind(np.matmul, ins[0], ins[1], out)


@matmul.implements("int8")
def _int8(ins, out, *, quant):
    from edgekit.numerics.params import matmul_params
    from edgekit.runtime.kernels.matmul import int8_batch_matmul
    from edgekit.runtime.registry import bind

    x, y = ins
    p = matmul_params(quant)
    return bind(int8_batch_matmul, _matrices(x), _matrices(y), *broadcast_index(x.shape, y.shape),
                p.zx, p.zy, p.mult, p.shift, p.zo, p.lo, p.hi, _matrices(out))


# --- importers --------------------------------------------------------------------------------

def _product(ctx, x, y, what: str):
    """``x @ y`` for either importer (``ctx``: a torch call or an ONNX node): two activations of
    one rank >= 3 make a matmul; a constant 2-D right side makes a linear layer."""
    from edgekit.converters.from_torch import Act, Unsupported

    if not isinstance(x, Act):
        raise Unsupported(f"{what} with a constant left operand")
    if not isinstance(y, Act):
        w = np.asarray(ctx.const(y, what))
        if w.ndim != 2:
            raise Unsupported(f"{what} with a constant right operand of rank {w.ndim}")
        return ctx.emit("linear", [x, ctx.param(w.T, "weight")])
    ranks = [len(ctx.b.shape(v.name)) for v in (x, y)]
    if ranks[0] != ranks[1] or ranks[0] < 3:
        raise Unsupported(f"{what} of activations of ranks {ranks[0]} and {ranks[1]} (two of one "
                          "rank >= 3, batch first: a lower rank would multiply across the batch)")
    return ctx.emit("matmul", [x, y])


def is_matmul_equation(equation: str) -> bool:
    """Whether an einsum ``equation`` of two operands is a batched matmul: ``bij,bjk->bik``,
    the same leading letters (or ``...``) on all three."""
    eq = equation.replace(" ", "").replace("...", "#")
    if eq.count("->") != 1 or eq.count(",") != 1:
        return False
    ins, out = eq.split("->")
    a, b = ins.split(",")
    return (len(a) == len(b) == len(out) >= 3 and a[:-2] == b[:-2] == out[:-2]
            and a[-1] == b[-2] and out[-2:] == a[-2] + b[-1] and len(set(a + b[-1])) == len(a) + 1)


def _torch(c, *args, **_):
    if c.aten != "einsum":
        return _product(c, args[0], args[1], c.aten)
    from edgekit.converters.from_torch import Unsupported

    equation, operands = args[0], args[1]
    if len(operands) != 2 or not is_matmul_equation(equation):
        raise Unsupported(f"einsum {equation!r} (only a batched matmul, 'bij,bjk->bik')")
    return _product(c, operands[0], operands[1], "einsum")


matmul.implements("torch", names=("matmul", "bmm", "mm", "einsum"))(_torch)


@matmul.implements("onnx_import", names=("MatMul",))
def _onnx_import(n, a, b):
    return _product(n, a, b, "MatMul")


# --- writers ----------------------------------------------------------------------------------

@matmul.implements("tflite")
def _tflite(w, node):
    """BATCH_MATMUL (adj_x = adj_y = false) on the Graph's own order, which broadcasts."""
    from edgekit.converters.to_tflite import identity

    rank = len(w.graph.tensors[node.inputs[0]].shape)
    if rank > TFLITE_MAX_RANK:
        raise EdgekitError(f"matmul {node.name or node.outputs[0]}: TFLite's BATCH_MATMUL "
                           f"takes operands of rank {TFLITE_MAX_RANK} at most, these are {rank}")
    ins = [w.value(name, identity(rank)) for name in node.inputs]
    w.op("BATCH_MATMUL", ins, [w.output(node, identity(rank))],
         w.options("BatchMatMul", adjX=False, adjY=False))


@matmul.implements("onnx")
def _onnx(e, node, ins):
    return e.add("MatMul", ins)


@matmul.implements("c")
def _c(w, i, node):
    """``ek_matmul``: one sample's output matrices, each from the x and y matrix its index
    arrays name; a constant operand is an int8 array of its own."""
    from edgekit.numerics.params import matmul_params

    x, y = node.inputs
    at = {n: w.array("int8_t", w.graph.params[n]) if n in w.graph.params else w.at(n)
          for n in node.inputs}
    xs, ys = w.shape(x), w.shape(y)
    x_index, y_index = broadcast_index(xs, ys)
    p = matmul_params(w.quant(node))
    fields = dict(count=len(x_index), m=xs[-2], k=xs[-1], p=ys[-1],
                  x_index=w.array("int32_t", x_index), y_index=w.array("int32_t", y_index),
                  zx=p.zx, zy=p.zy, zo=p.zo, mult=p.mult, shift=p.shift)
    return (f"ek_matmul({w.struct('ek_matmul_t', i, fields)}, {at[x]}, {at[y]}, "
            f"{w.at(node.outputs[0])});")


# --- gpu target (torch), on-device learning, spiking ------------------------------------------

@matmul.implements("gpu")
def _gpu(x, y):
    import torch

    return torch.matmul(x, y)


matmul.unsupported("learn", "edgekit.learn trains sequential chains of conv/linear blocks; a "
                            "product of two activations has no gradient rule there")

from edgekit.ops.spiking import no_spiking_form  # noqa: E402

no_spiking_form(matmul, "converters.snn.to_snn refuses matmul: a product of two spike trains is "
                        "not the product of their rates")
