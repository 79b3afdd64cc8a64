"""Ops that move values without computing: reshape and concat, with every backend's
implementation.

On int8 they run their float32 kernels (exact on any dtype) after checking that inputs and
output share one quantization, as the quantizer makes them (``first_input``, ``all_inputs``).
"""

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


# --- edgekit runtime --------------------------------------------------------------------------

@reshape.implements("float32")
def _reshape_float32(ins, out, *, shape):
    from edgekit.runtime.registry import bind

    return bind(np.copyto, out, ins[0].reshape(out.shape))


@concat.implements("float32")
def _concat_float32(ins, out, *, axis):
    """One copy per input into its slice of the output along ``axis``."""
    axis %= out.ndim
    ends = np.cumsum([x.shape[axis] for x in ins])
    parts = [(out[(slice(None),) * axis + (slice(end - x.shape[axis], end),)], x)
             for x, end in zip(ins, ends, strict=True)]

    def step() -> None:
        for dst, src in parts:
            np.copyto(dst, src)

    return step


def moves_int8(op: OpDef) -> None:
    """``op``'s int8 kernel is its float32 one (a copy moves int8 as it moves float32), after
    checking that its inputs and output share one quantization (layout.py uses it too)."""

    @op.implements("int8")
    def _(ins, out, *, quant, **attrs):
        from edgekit.runtime.int8 import check_shared

        check_shared(op.name, quant)
        return op.impls["float32"].fn(ins, out, **attrs)


for _op in (reshape, concat):
    moves_int8(_op)


# --- importers --------------------------------------------------------------------------------

def _reshape_to(c, x, per_sample):
    """x as ``per_sample`` (batch kept), or x itself when that is its shape already."""
    if tuple(per_sample) == c.b.shape(x.name)[1:]:
        return x
    return c.emit("reshape", [x], {"shape": [int(d) for d in per_sample]})


@reshape.implements("torch", names=("view", "reshape", "_unsafe_view", "flatten", "squeeze",
                                    "unsqueeze"))
def _reshape_torch(c, x, *_, **__):
    """The Graph keeps the batch as the free leading dim, so the per-sample target is the
    recorded output shape without its first dim; a reshape that moves data across the batch
    dim cannot be expressed."""
    from edgekit.converters.from_torch import Unsupported

    src, out = c.shape(c.node.args[0]), c.shape(c.node)
    if not out or str(out[0]) != str(src[0]):
        raise Unsupported(f"{c.aten} across the batch dimension ({list(src)} -> {list(out)})")
    return _reshape_to(c, x, [int(d) for d in out[1:]])


@reshape.implements("onnx_import", names=("Reshape", "Flatten"))
def _reshape_onnx_import(n, x, shape=None):
    return (_flatten_onnx if n.op == "Flatten" else _reshape_onnx)(n, x, shape)


def _flatten_onnx(n, x, _):
    from edgekit.converters.from_torch import Unsupported

    shape = n.shape(x)
    if n.get("axis", 1) % len(shape) != 1:
        raise Unsupported(f"Flatten(axis={n.get('axis')}) across the batch dimension")
    return _reshape_to(n, x, [prod(shape[1:])])


def _reshape_onnx(n, x, shape):
    """The target's first entry is the batch slot (0, -1 or the export's batch size, all
    meaning 'keep the batch'); the rest is the per-sample shape, with ONNX's 0 (copy the
    input dim, unless allowzero) and -1 (infer) resolved against the per-sample size."""
    from edgekit.converters.from_torch import Unsupported

    target = np.asarray(n.const(shape, "Reshape with a computed shape"))
    if target.ndim != 1 or target.dtype.kind not in "iu":
        fail(f"Reshape's shape must be a 1-D int tensor, got {target.dtype}{list(target.shape)}")
    target = [int(d) for d in target]
    src = n.shape(x)
    rest = [src[i] if d == 0 and not n.get("allowzero", 0) and i < len(src) else d
            for i, d in enumerate(target[1:], 1)]
    size, known = prod(src[1:]), prod(d for d in rest if d != -1)
    if rest.count(-1) == 1 and known and size % known == 0:
        rest = [size // known if d == -1 else d for d in rest]
    if not target or rest.count(-1) or prod(rest) != size:
        raise Unsupported(f"Reshape across the batch dimension ({list(src)} -> {target})")
    return _reshape_to(n, x, rest)


@concat.implements("torch", names=("cat", "concat"))
def _concat_torch(c, tensors, dim=0):
    from edgekit.converters.from_torch import Act

    xs = [t if isinstance(t, Act) else c.param(c.const(t, "cat"), "const") for t in tensors]
    return c.emit("concat", xs, {"axis": int(dim) % len(c.b.shape(xs[0].name))})


@concat.implements("onnx_import", names=("Concat",))
def _concat_onnx_import(n, *xs):
    from edgekit.converters.from_torch import Act

    rank = len(n.shape(next(x for x in xs if isinstance(x, Act))))
    ins = [x if isinstance(x, Act) else n.param(x, "const") for x in xs]
    return n.emit("concat", ins, {"axis": n.axis(None, rank)})


# --- writers ----------------------------------------------------------------------------------

@reshape.implements("tflite")
def _reshape_tflite(w, node):
    """RESHAPE on the Graph's (channels-first) order, so flatten after a conv stays NCHW."""
    from edgekit.converters.to_tflite import identity

    rank = len(w.graph.tensors[node.inputs[0]].shape)
    x = w.value(node.inputs[0], identity(rank))
    w.reshape(x, w.output(node, identity(len(node.attrs["shape"]) + 1)))


@concat.implements("tflite")
def _concat_tflite(w, node):
    """CONCATENATION in the first input's layout (the others are brought to it)."""
    layout = w.layout[node.inputs[0]]
    axis = layout.index(node.attrs["axis"] % len(layout))
    ins = [w.value(name, layout) for name in node.inputs]
    w.op("CONCATENATION", ins, [w.output(node, layout)], w.options("Concatenation", axis=axis))


@reshape.implements("onnx")
def _reshape_onnx_writer(e, node, ins):
    return e.add("Reshape", [ins[0], e.const(np.asarray([-1, *node.attrs["shape"]], np.int64))])


@concat.implements("onnx")
def _concat_onnx_writer(e, node, ins):
    return e.add("Concat", ins, axis=node.attrs["axis"])


@reshape.implements("c")
def _reshape_c(w, i, node):
    """A copy: the arena holds every tensor in the Graph's own (NCHW) order."""
    return f"ek_copy({w.size(node.outputs[0])}, {w.at(node.inputs[0])}, " \
           f"{w.at(node.outputs[0])});"


@concat.implements("c")
def _concat_c(w, i, node):
    """One ``ek_concat_part`` per input: its rows of ``inner`` values into the output's rows
    of ``total`` at ``offset``."""
    ys = w.shape(node.outputs[0])
    axis = node.attrs["axis"] % len(ys)
    outer, total, offset, calls = prod(ys[:axis]), prod(ys[axis:]), 0, []
    for name in node.inputs:
        inner = prod(w.shape(name)[axis:])
        calls.append(f"ek_concat_part({outer}, {inner}, {total}, {offset}, {w.at(name)}, "
                     f"{w.at(node.outputs[0])});")
        offset += inner
    return " ".join(calls)


# --- gpu target (torch) and on-device learning ------------------------------------------------

@reshape.implements("gpu")
def _reshape_gpu(x, *, shape):
    return x.reshape(x.shape[0], *shape)


@concat.implements("gpu")
def _concat_gpu(*xs, axis):
    import torch

    return torch.cat(xs, dim=axis)


@reshape.implements("learn", keeps_block_shape=True)
def _reshape_learn(blocks, graph, node, where):
    """Nothing to do: the next block reads its input in its own shape (a flatten before a
    linear), so the last block keeps its output's."""


concat.unsupported("learn", "concat joins branches; finetune trains sequential chains of "
                            "conv/linear blocks")


# --- spiking backends -------------------------------------------------------------------------
# spiking, spiking_int8, onnx_spiking, c_spiking and quant_spiking of reshape and concat are
# registered here by the spiking engines' migration.

from edgekit.ops.spiking import no_spiking_form, same_every_step  # noqa: E402

same_every_step(reshape, ("spiking", "spiking_int8"))
same_every_step(concat)
no_spiking_form(concat, "spiking Graphs that join branches run only in float32, on the runtime "
                        "and in ONNX", ("spiking_int8", "quant_spiking", "onnx_spiking",
                                        "c_spiking"))


@reshape.implements("quant_spiking")
def _reshape_quant_spiking(g, node, float_params, per_channel, partners):
    """Keeps its input's dtype and (per-tensor) quantization."""
    import copy

    from edgekit.quant.spiking import per_tensor, set_tensor

    source = g.tensors[node.inputs[0]]
    per_tensor(g, node.inputs[0], node.op)
    set_tensor(g, node.outputs[0], source.dtype, copy.deepcopy(source.quant))


@reshape.implements("onnx_spiking")
def _reshape_onnx_spiking(e, step, node):
    e.bounds[node.outputs[0]] = e.bound(node.inputs[0])
    _reshape_onnx_writer(e, step, step.inputs)


@reshape.implements("c_spiking")
def _reshape_c_spiking(w, i, node):
    x = node.inputs[0]
    return f"memcpy({w.at(node.outputs[0])}, {w.at(x)}, {w.nbytes(x)})"
