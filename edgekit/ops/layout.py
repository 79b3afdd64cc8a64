"""Ops that move values to other places: transpose (any permutation of the non-batch axes) and
slice (a box with positive steps), with every backend's implementation.

Both are one strided copy: output element ``i`` reads input element ``offset + i . strides``
(``strided_layout``), which is how the firmware runs them (``ek_strided_copy``). Importers
lower to them what has no op of its own, exactly: split/chunk/unbind/select to one slice per
piece, pixel (un)shuffle and ONNX DepthToSpace/SpaceToDepth to reshape + transpose + reshape.
The batch stays axis 0 and is never sliced.
"""

from __future__ import annotations

import numpy as np

from edgekit.ops import declare
from edgekit.ops.schema import REQUIRED, OpDef, fail, prod
from edgekit.ops.shape import moves_int8


def _ints(op: str, key: str, value, n: int) -> list[int]:
    """Attributes come from files too: ``value`` must be a list of ``n`` ints."""
    if not (isinstance(value, list) and len(value) == n and all(type(v) is int for v in value)):
        fail(f"op {op!r}: attribute {key!r} must be a list of {n} ints, got {value!r}")
    return value


def _transpose_shape(s, a):
    x = s[0]
    perm = _ints("transpose", "perm", a["perm"], len(x))
    if sorted(perm) != list(range(len(x))):
        fail(f"transpose's perm {perm} is not a permutation of the {len(x)} axes of {x}")
    if perm[0] != 0:
        fail(f"transpose may not move the batch axis (perm {perm}): the batch stays axis 0")
    return tuple(x[p] for p in perm)


transpose = declare(OpDef(
    "transpose", (1, 1), {"perm": REQUIRED}, _transpose_shape, quant="first_input",
    reference=lambda x, *, perm: x.transpose(perm).astype(np.float32),
    doc="permute the axes (perm over all axes, batch kept at 0)"))


def _slice_shape(s, a):
    x = s[0]
    n = len(x) - 1
    starts, stops, steps = (_ints("slice", k, a[k], n) for k in ("starts", "stops", "steps"))
    for axis, (start, stop, step) in enumerate(zip(starts, stops, steps, strict=True), 1):
        if step < 1 or not 0 <= start < stop <= x[axis]:
            fail(f"slice {start}:{stop}:{step} of axis {axis} (size {x[axis]}) must be a "
                 "non-empty range inside it with a positive step")
    return (x[0], *(-(-(b - a) // k) for a, b, k in zip(starts, stops, steps, strict=True)))


slice_ = declare(OpDef(
    "slice", (1, 1), {"starts": REQUIRED, "stops": REQUIRED, "steps": REQUIRED}, _slice_shape,
    quant="first_input",
    reference=lambda x, *, starts, stops, steps: x[_box(starts, stops, steps)].astype(np.float32),
    doc="x[:, start:stop:step, ...]: one start, stop and positive step per non-batch axis"))


def _box(starts, stops, steps) -> tuple[slice, ...]:
    return (slice(None), *(slice(a, b, k) for a, b, k in zip(starts, stops, steps, strict=True)))


def strided_layout(op: str, shape, attrs) -> tuple[int, list[int], list[int]]:
    """(offset, dims, strides) of one sample: output element ``(i_1, ..., i_n)`` (the batch
    dropped) is input element ``offset + sum(i_k * strides[k])`` of ``shape``; axes that stay
    contiguous merge, so a channel slice is one run."""
    inner = [prod(shape[k + 1:]) for k in range(len(shape))]
    if op == "transpose":
        axes = attrs["perm"][1:]
        offset, dims, strides = 0, [shape[a] for a in axes], [inner[a] for a in axes]
    else:
        box = list(zip(attrs["starts"], attrs["stops"], attrs["steps"], strict=True))
        offset = sum(a * inner[axis] for axis, (a, _, _) in enumerate(box, 1))
        dims = [-(-(b - a) // k) for a, b, k in box]
        strides = [k * inner[axis] for axis, (_, _, k) in enumerate(box, 1)]
    merged_dims: list[int] = []
    merged: list[int] = []
    for d, s in zip(dims, strides, strict=True):
        if d == 1:
            continue
        if merged and merged[-1] == s * d:
            merged_dims[-1] *= d
            merged[-1] = s
        else:
            merged_dims.append(d)
            merged.append(s)
    return offset, merged_dims or [1], merged or [1]


# --- edgekit runtime --------------------------------------------------------------------------

@transpose.implements("float32")
def _transpose_float32(ins, out, *, perm):
    from edgekit.runtime.registry import bind

    return bind(np.copyto, out, ins[0].transpose(perm))


@slice_.implements("float32")
def _slice_float32(ins, out, *, starts, stops, steps):
    from edgekit.runtime.registry import bind

    return bind(np.copyto, out, ins[0][_box(starts, stops, steps)])


for _op in (transpose, slice_):
    moves_int8(_op)


# --- importers: torch.export ------------------------------------------------------------------

def _emit_slice(c, x, axis: int, start, stop, step: int = 1):
    """x[start:stop:step] along ``axis`` (Python's reading of the bounds: None for the end,
    negative from the end, clipped to the axis); x itself for the whole axis. The batch may only
    be taken whole (the Graph's batch is free: its recorded size says nothing)."""
    from edgekit.converters.from_torch import Unsupported

    if step < 1:
        raise Unsupported(f"slice with step {step} (only positive steps)")
    if axis == 0:
        if start not in (None, 0) or (stop is not None and stop < 2**31 - 1) or step != 1:
            raise Unsupported("slice across the batch dimension")
        return x
    shape = c.b.shape(x.name)
    start, stop, step = slice(start, stop, step).indices(shape[axis])
    if (start, stop, step) == (0, shape[axis], 1):
        return x
    box = [[0, d, 1] for d in shape[1:]]
    box[axis - 1] = [start, stop, step]
    starts, stops, steps = (list(v) for v in zip(*box, strict=True))
    return c.emit("slice", [x], {"starts": starts, "stops": stops, "steps": steps})


def _squeeze(c, x, axis: int):
    shape = c.b.shape(x.name)
    return c.emit("reshape", [x], {"shape": [d for i, d in enumerate(shape[1:], 1) if i != axis]})


def _split_torch(c, x, dim, indices=None):
    """split, split_with_sizes, chunk, tensor_split (sections), unbind: consecutive pieces of
    the sizes torch recorded; tensor_split at ``indices``: the pieces between them. A slice
    for each piece the program reads (torch.export takes every piece, read or not)."""
    from edgekit.converters.from_torch import Unsupported

    shape = c.b.shape(x.name)
    axis = int(dim) % len(shape)
    if axis == 0:
        raise Unsupported(f"{c.aten} across the batch dimension")
    if indices is not None:
        bounds = [0, *(slice(None, int(i)).indices(shape[axis])[1] for i in indices),
                  shape[axis]]
    elif c.aten == "unbind":
        bounds = list(range(shape[axis] + 1))
    else:
        bounds = np.cumsum([0, *(int(v.shape[axis]) for v in c.node.meta["val"])]).tolist()
    if any(b <= a for a, b in zip(bounds[:-1], bounds[1:], strict=True)):
        raise Unsupported(f"{c.aten} into an empty piece")
    read = {user.args[1] for user in c.node.users if user.users}  # getitems used later
    pieces = [_emit_slice(c, x, axis, a, b) if i in read else None
              for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))]
    return tuple(_squeeze(c, y, axis) if y is not None and c.aten == "unbind" else y
                 for y in pieces)


def _slice_args(dim=0, start=None, end=None, step=1):
    return int(dim), start, end, int(step)


@slice_.implements("torch", names=("slice", "narrow", "select", "split", "split_with_sizes",
                                   "chunk", "tensor_split", "unbind"))
def _slice_torch(c, x, *args, **kwargs):
    """aten slice.Tensor(x, dim, start, end, step), narrow(x, dim, start, length),
    select(x, dim, index) (a slice of one, reshaped without the axis), and the splits."""
    rank = len(c.b.shape(x.name))
    if c.aten == "unbind":
        return _split_torch(c, x, kwargs.get("dim", args[0] if args else 0))
    if c.aten in ("split", "split_with_sizes", "chunk", "tensor_split"):
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        at = args[0] if c.aten == "tensor_split" and isinstance(args[0], (list, tuple)) else None
        return _split_torch(c, x, dim, at)
    if c.aten == "slice":
        dim, start, end, step = _slice_args(*args, **kwargs)
        return _emit_slice(c, x, dim % rank, start, end, step)
    dim, start = int(args[0]) % rank, int(args[1])
    start = start + c.b.shape(x.name)[dim] if start < 0 else start
    if c.aten == "narrow":
        return _emit_slice(c, x, dim, start, start + int(args[2]))
    return _squeeze(c, _emit_slice(c, x, dim, start, start + 1), dim)


@transpose.implements("torch", names=("permute", "transpose", "t", "mT", "movedim", "swapaxes",
                                      "swapdims", "pixel_shuffle", "pixel_unshuffle"))
def _transpose_torch(c, x, *args):
    """The permutation is read off the strides of the same ATen call on a 2 x 2 x ... tensor
    (input axis k has stride 2^(rank-1-k)), one reading for every way of spelling it."""
    import torch

    if c.aten in ("pixel_shuffle", "pixel_unshuffle"):
        return _pixel_shuffle(c, x, int(args[0]), c.aten == "pixel_shuffle", "CRD")
    rank = len(c.b.shape(x.name))
    view = c.node.target(torch.empty((2,) * rank), *args)
    perm = [rank - int(s).bit_length() for s in view.stride()]
    return x if perm == list(range(rank)) else c.emit("transpose", [x], {"perm": perm})


def _pixel_shuffle(c, x, r: int, up: bool, mode: str):
    """(C r r, H, W) <-> (C, H r, W r) as reshape, transpose, reshape: torch's pixel_shuffle
    and ONNX's DepthToSpace in CRD mode read the channels as (C, r, r), DepthToSpace in DCR
    mode as (r, r, C); SpaceToDepth writes them as DCR does."""
    shape = c.b.shape(x.name)
    if len(shape) != 4:
        fail(f"pixel (un)shuffle of a {len(shape)}-D tensor {list(shape)}: it takes N, C, H, W")
    _, ch, h, w = shape
    if r < 1 or (ch % (r * r) if up else h % r or w % r):
        fail(f"pixel (un)shuffle by {r} does not divide {list(shape)}")
    if up:
        split = [ch // (r * r), r, r, h, w] if mode == "CRD" else [r, r, ch // (r * r), h, w]
        perm = [0, 1, 4, 2, 5, 3] if mode == "CRD" else [0, 3, 4, 1, 5, 2]
        joined = [ch // (r * r), h * r, w * r]
    else:
        split = [ch, h // r, r, w // r, r]
        perm = [0, 1, 3, 5, 2, 4] if mode == "CRD" else [0, 3, 5, 1, 2, 4]
        joined = [ch * r * r, h // r, w // r]
    y = c.emit("reshape", [x], {"shape": split})
    y = c.emit("transpose", [y], {"perm": perm})
    return c.emit("reshape", [y], {"shape": joined})


# --- importers: ONNX --------------------------------------------------------------------------

@transpose.implements("onnx_import", names=("Transpose", "DepthToSpace", "SpaceToDepth"))
def _transpose_onnx_import(n, x):
    if n.op != "Transpose":
        mode = n.get("mode", "DCR") if n.op == "DepthToSpace" else "DCR"
        if mode not in ("DCR", "CRD"):
            fail(f"DepthToSpace mode {mode!r} (ONNX has DCR and CRD)")
        return _pixel_shuffle(n, x, int(n.get("blocksize", 0)), n.op == "DepthToSpace", mode)
    rank = len(n.shape(x))
    perm = [int(p) for p in n.get("perm", range(rank - 1, -1, -1))]
    return x if perm == list(range(rank)) else n.emit("transpose", [x], {"perm": perm})


@slice_.implements("onnx_import", names=("Slice", "Split"))
def _slice_onnx_import(n, x, *args):
    return (_split_onnx if n.op == "Split" else _slice_onnx)(n, x, *args)


def _slice_onnx(n, x, starts=None, ends=None, axes=None, steps=None):
    """Slice with constant starts/ends/axes/steps (attributes before opset 10): one slice node
    for every axis it names."""
    from edgekit.converters.from_torch import Unsupported

    if n.opset < 10:
        starts, ends, axes = n.get("starts"), n.get("ends"), n.get("axes")
    shape = n.shape(x)
    starts, ends = (np.asarray(n.const(v, "Slice with computed bounds"), np.int64).reshape(-1)
                    for v in (starts, ends))
    axes = range(len(starts)) if axes is None else np.asarray(
        n.const(axes, "Slice with computed axes"), np.int64).reshape(-1)
    steps = np.ones(len(starts), np.int64) if steps is None else np.asarray(
        n.const(steps, "Slice with computed steps"), np.int64).reshape(-1)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        fail(f"Slice's starts, ends, axes and steps differ in length "
             f"({len(starts)}, {len(ends)}, {len(axes)}, {len(steps)})")
    box = [[0, d, 1] for d in shape]
    for a, start, end, step in zip(axes, starts, ends, steps, strict=True):
        if not -len(shape) <= a < len(shape):
            fail(f"Slice axis {a} is out of range for rank {len(shape)}")
        if step < 1:
            raise Unsupported(f"Slice with step {step} (only positive steps)")
        if a % len(shape) == 0 and (start != 0 or end < 2**31 - 1 or step != 1):
            raise Unsupported("Slice across the batch dimension")  # whole, or not at all
        box[a % len(shape)] = list(slice(int(start), int(end), int(step)).indices(
            shape[a % len(shape)]))
    if all(b == [0, d, 1] for b, d in zip(box, shape, strict=True)):
        return x
    starts, stops, steps = (list(v) for v in zip(*box[1:], strict=True))
    return n.emit("slice", [x], {"starts": starts, "stops": stops, "steps": steps})


def _split_onnx(n, x, split=None):
    """Split into ``split``'s sizes (an attribute before opset 13), else into ``num_outputs``
    (opset 18: ceil-sized, the last smaller) or as many equal pieces as the node has outputs."""
    shape = n.shape(x)
    axis = n.axis(0, len(shape))
    size = shape[axis]
    split = n.get("split") if n.opset < 13 else split
    if split is not None:
        sizes = [int(s) for s in np.asarray(n.const(split, "Split with computed sizes"))
                 .reshape(-1)]
    elif n.get("num_outputs") is not None or size % n.n_out == 0:
        piece = -(-size // n.n_out)
        sizes = [min(piece, size - i * piece) for i in range(n.n_out)]
    else:
        fail(f"Split of {size} into {n.n_out} equal pieces")
    if len(sizes) != n.n_out or sum(sizes) != size or min(sizes) < 1:
        fail(f"Split sizes {sizes} do not cut axis {axis} of {shape} into {n.n_out} pieces")
    ends = np.cumsum([0, *sizes]).tolist()
    return [_emit_slice(n, x, axis, a, b) for a, b in zip(ends[:-1], ends[1:], strict=True)]


# --- writers ----------------------------------------------------------------------------------

# tflite-micro's TRANSPOSE and STRIDED_SLICE take at most five axes (kMaxDim)
TFLM_MAX_DIMS = 5


@transpose.implements("tflite")
def _transpose_tflite(w, node):
    """TRANSPOSE from the input's layout to the Graph's order, a RESHAPE where only unit axes
    move (a permute to NHWC of a conv's output is free). A permutation of more axes than
    tflite-micro takes is written over its runs of axes that move together (pixel shuffle's
    six axes are five: the batch travels with the channels), between two RESHAPEs."""
    from edgekit.converters.to_tflite import identity

    layout = w.layout[node.inputs[0]]
    x = w.value(node.inputs[0], layout)
    out = w.output(node, identity(len(layout)))
    perm = [layout.index(a) for a in node.attrs["perm"]]  # x's TFLite axes, in output order
    shape, runs = w.shape(x), _runs(w.shape(x), perm)
    if len(runs) == 1 or runs == sorted(runs):
        w.reshape(x, out)
    elif len(perm) <= TFLM_MAX_DIMS:
        w.op("TRANSPOSE", [x, w.int32(perm)], [out])
    elif len(runs) <= TFLM_MAX_DIMS:
        order = sorted(runs)
        merged = w.derived(x, [prod(shape[a] for a in run) for run in order], "/runs")
        w.reshape(x, merged)
        moved = w.derived(x, [w.shape(merged)[order.index(run)] for run in runs], "/moved")
        w.op("TRANSPOSE", [merged, w.int32([order.index(run) for run in runs])], [moved])
        w.reshape(moved, out)
    else:
        fail(f"a permutation of {len(runs)} runs of axes; tflite-micro transposes at most "
             f"{TFLM_MAX_DIMS}")


def _runs(shape, perm) -> list[list[int]]:
    """The axes of ``shape`` in ``perm``'s output order, unit axes other than the first left
    out, grouped into runs that are consecutive in the input too."""
    kept = [a for a in perm if a == 0 or shape[a] != 1]
    runs: list[list[int]] = []
    for a in kept:
        between = range(runs[-1][-1] + 1, a) if runs else ()
        if runs and a > runs[-1][-1] and all(shape[b] == 1 for b in between):
            runs[-1].append(a)
        else:
            runs.append([a])
    return runs


@slice_.implements("tflite")
def _slice_tflite(w, node):
    """STRIDED_SLICE in the input's layout; the batch (axis 0 of every layout) whole, by mask."""
    layout = w.layout[node.inputs[0]]
    if len(layout) > TFLM_MAX_DIMS:
        fail(f"a slice of {len(layout)} axes; TFLite's STRIDED_SLICE takes at most "
             f"{TFLM_MAX_DIMS}")
    a = node.attrs
    box = [(0, 0, 1)] + list(zip(a["starts"], a["stops"], a["steps"], strict=True))
    begin, end, stride = ([box[axis][k] for axis in layout] for k in range(3))
    w.op("STRIDED_SLICE", [w.value(node.inputs[0], layout), w.int32(begin), w.int32(end),
                           w.int32(stride)], [w.output(node, layout)],
         w.options("StridedSlice", beginMask=1, endMask=1))


@transpose.implements("onnx")
def _transpose_onnx(e, node, ins):
    return e.add("Transpose", ins, perm=node.attrs["perm"])


@slice_.implements("onnx")
def _slice_onnx_writer(e, node, ins):
    a = node.attrs
    consts = [e.const(np.asarray(v, np.int64)) for v in
              (a["starts"], a["stops"], range(1, len(a["starts"]) + 1), a["steps"])]
    return e.add("Slice", [ins[0], *consts])


def _strided_c(w, i, node):
    """One ``ek_strided_copy`` (firmware_bridge/firmware/ek_layout.c) of the merged layout."""
    from edgekit.converters.to_c import MAX_DIMS

    x, y = node.inputs[0], node.outputs[0]
    offset, dims, strides = strided_layout(node.op, w.shape(x), node.attrs)
    if len(dims) > MAX_DIMS:
        fail(f"{node.op} over {len(dims)} runs of axes; the firmware moves at most {MAX_DIMS}")
    pad = [1] * (MAX_DIMS - len(dims))
    struct = w.struct("ek_strided_t", i, {"ndims": len(dims), "offset": offset,
                                          "dims": dims + pad, "strides": strides + pad})
    return f"ek_strided_copy({struct}, {w.at(x)}, {w.at(y)});"


transpose.implements("c")(_strided_c)
slice_.implements("c")(_strided_c)


# --- gpu target (torch), on-device learning, spiking ------------------------------------------

@transpose.implements("gpu")
def _transpose_gpu(x, *, perm):
    return x.permute(*perm)


@slice_.implements("gpu")
def _slice_gpu(x, *, starts, stops, steps):
    return x[_box(starts, stops, steps)]


for _op in (transpose, slice_):
    _op.unsupported("learn", f"{_op.name} moves values between positions; finetune trains "
                             "chains of conv/linear blocks whose outputs keep their positions")

from edgekit.ops.spiking import no_spiking_form, same_every_step  # noqa: E402

for _op in (transpose, slice_):
    same_every_step(_op)
    no_spiking_form(_op, f"{_op.name} runs in float32 spiking Graphs only (on the runtime "
                         "and in ONNX)",
                    ("spiking_int8", "quant_spiking", "onnx_spiking", "c_spiking"))
