"""pad: grow the non-batch axes by a constant, a reflection or the edge values, with every
backend's implementation.

Attributes: ``pads`` is ``[before_1, ..., before_k, after_1, ..., after_k]`` over the k
non-batch axes (ONNX's order less the batch axis; a conv's ``padding`` is this over its spatial
axes), ``mode`` is "constant" (``value`` fills), "reflect" (mirror without the edge: pads must be
smaller than the axis) or "replicate" (the edge value repeated). Negative pads (a crop) are
refused. The runtime and firmware kernels run one sample as 4-D, so k is at most 4.

int8 keeps the input's quantization (``first_input``); the constant is quantized into it once
(``pad_value``), which the runtime, the TFLite writer (PADV2's int8 constant, or PAD when it is
the zero point, as TFLite pads) and the firmware read. A zero constant pad feeding a
convolution is folded into the conv's padding at import (``converters.passes``).
"""

from __future__ import annotations

import numpy as np

from edgekit.ops import declare
from edgekit.ops.schema import REQUIRED, OpDef, fail

MODES = ("constant", "reflect", "replicate")  # index = the kernels' mode code
_NUMPY_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}
MAX_AXES = 4


def _pairs(pads: list[int]) -> list[tuple[int, int]]:
    """(before, after) per non-batch axis."""
    k = len(pads) // 2
    return list(zip(pads[:k], pads[k:], strict=True))


def _pad_shape(s, a):
    x, pads, mode = s[0], a["pads"], a["mode"]
    k = len(x) - 1
    if not 1 <= k <= MAX_AXES:
        fail(f"pad takes 1 to {MAX_AXES} non-batch axes, got shape {x}")
    if not isinstance(pads, list) or len(pads) != 2 * k or any(type(p) is not int for p in pads):
        fail(f"pad: pads must be {2 * k} ints [befores..., afters...] for shape {x}, got {pads!r}")
    if any(p < 0 for p in pads):
        fail(f"pad: negative pads {pads} (a crop) are not supported")
    if mode not in MODES:
        fail(f"pad: mode must be one of {MODES}, got {mode!r}")
    if mode != "constant" and a["value"] != 0:
        fail(f"pad: value {a['value']} applies to mode 'constant' only, not {mode!r}")
    pairs = _pairs(pads)
    for axis, (n, (before, after)) in enumerate(zip(x[1:], pairs, strict=True), 1):
        if mode == "reflect" and max(before, after) >= n:
            fail(f"pad: reflect pads {before, after} must be smaller than axis {axis} of size {n}")
    return (x[0], *(n + b + e for n, (b, e) in zip(x[1:], pairs, strict=True)))


def _reference(x, *, pads, mode, value):
    extra = {"constant_values": value} if mode == "constant" else {}
    return np.pad(x.astype(np.float64), [(0, 0), *_pairs(pads)], mode=_NUMPY_MODES[mode],
                  **extra).astype(np.float32)


pad = declare(OpDef(
    "pad", (1, 1), {"pads": REQUIRED, "mode": "constant", "value": 0.0}, _pad_shape,
    quant="first_input", reference=_reference,
    doc="pads is [befores..., afters...] over the non-batch axes; mode constant (value), "
        "reflect or replicate"))


def pad_value(value: float, q) -> int:
    """The int8 constant of a constant pad in quantization ``q``: ``zp + round(value / scale)``
    (float32, half away from zero, as TFLite rounds activation bounds), saturated; the zero
    point for 0."""
    zp, scale = int(q.zero_point[0]), np.float32(q.scale[0])
    step = np.float32(value) / scale
    return int(np.clip(zp + int(np.sign(step) * np.floor(np.abs(step) + np.float32(0.5))),
                       -128, 127))


def _as_4d(sample: tuple[int, ...], pads: list[int]) -> tuple[list[int], list[int], list[int]]:
    """(dims, befores, afters) of one sample as the kernels' 4 axes (leading unit axes)."""
    lead = MAX_AXES - len(sample)
    pairs = [(0, 0)] * lead + _pairs(pads)
    return [1] * lead + list(sample), [b for b, _ in pairs], [e for _, e in pairs]


# --- edgekit runtime --------------------------------------------------------------------------

def _prepare(x, out, pads, mode, fill):
    """One ``pad4`` call per sample on 4-D views."""
    from edgekit.runtime.kernels.pad import pad4
    from edgekit.runtime.registry import sequence

    dims, before, after = _as_4d(x.shape[1:], pads)
    out_dims = [d + b + e for d, b, e in zip(dims, before, after, strict=True)]
    before = np.asarray(before, np.int64)
    return sequence([(pad4, x[n].reshape(dims), before, MODES.index(mode), fill,
                      out[n].reshape(out_dims)) for n in range(x.shape[0])])


@pad.implements("float32")
def _pad_float32(ins, out, *, pads, mode, value):
    return _prepare(ins[0], out, pads, mode, np.float32(value))


@pad.implements("int8")
def _pad_int8(ins, out, *, pads, mode, value, quant):
    from edgekit.runtime.int8 import check_shared

    check_shared("pad", quant)
    return _prepare(ins[0], out, pads, mode, np.int8(pad_value(value, quant[0])))


# --- importers --------------------------------------------------------------------------------

def _emit(c, x, pads, mode, value):
    """The op from per-axis (before, after) ``pads`` over every axis, batch first."""
    from edgekit.converters.from_torch import Unsupported

    if pads[0] != (0, 0):
        raise Unsupported(f"pad along the batch axis {pads[0]}")
    if any(p < 0 for pair in pads for p in pair):
        raise Unsupported(f"pad by negative amounts (a crop) {[list(p) for p in pads]}")
    attrs = {"pads": [int(b) for b, _ in pads[1:]] + [int(e) for _, e in pads[1:]],
             "mode": mode}
    if mode == "constant":
        attrs["value"] = float(value or 0.0)
    return c.emit("pad", [x], attrs)


_TORCH_MODES = {"reflection": "reflect", "replication": "replicate"}


@pad.implements("torch", names=("pad", "constant_pad_nd", "reflection_pad1d",
                                "reflection_pad2d", "reflection_pad3d", "replication_pad1d",
                                "replication_pad2d", "replication_pad3d", "index"))
def _pad_torch(c, x, pad_, mode="constant", value=None):
    """aten.pad (F.pad and the nn padding layers in torch.export's default IR), its core-ATen
    constant_pad_nd, the reflection/replication_padNd ops, and core ATen's reflect/replicate
    (``_gather_torch``). torch lists (before, after) from the last axis back."""
    from edgekit.converters.from_torch import Unsupported

    if c.aten == "index":
        return _gather_torch(c, x, pad_)
    if c.aten == "constant_pad_nd":  # (x, pad, value=0): its third argument is the value
        mode, value = "constant", value if mode == "constant" else mode
    elif c.aten != "pad":
        mode = _TORCH_MODES[c.aten.split("_")[0]]
    if mode not in MODES:
        raise Unsupported(f"pad mode {mode!r}")
    rank = len(c.b.shape(x.name))
    if len(pad_) % 2 or len(pad_) > 2 * rank:
        raise Unsupported(f"pad of {list(pad_)} on a rank-{rank} tensor")
    pairs = [(0, 0)] * rank
    for i in range(len(pad_) // 2):
        pairs[rank - 1 - i] = (int(pad_[2 * i]), int(pad_[2 * i + 1]))
    return _emit(c, x, pairs, mode, value)


def _gather_torch(c, x, indices):
    """aten.index.Tensor as core ATen decomposes a reflect or replicate pad: one constant 1-D
    index along one axis, equal to that axis's positions padded so (``arange`` arithmetic,
    folded at import). Any other gather is not a Graph op."""
    from edgekit.converters.from_torch import Act, Unsupported

    axes = [i for i, index in enumerate(indices) if index is not None]
    if len(axes) == 1 and axes[0] > 0 and not isinstance(indices[axes[0]], Act):
        axis = axes[0]
        index, size = np.asarray(c.const(indices[axis], "index")), c.b.shape(x.name)[axis]
        extra = index.size - size
        for mode in ("reflect", "replicate"):
            for before in range(max(extra + 1, 0)):
                want = np.pad(np.arange(size), (before, extra - before), _NUMPY_MODES[mode])
                if index.ndim == 1 and np.array_equal(index, want) and (
                        mode == "replicate" or max(before, extra - before) < size):
                    pairs = [(0, 0)] * len(c.b.shape(x.name))
                    pairs[axis] = (before, extra - before)
                    return _emit(c, x, pairs, mode, None)
    raise Unsupported("index (a gather; only the index patterns of reflect and replicate pads "
                      "are lowered)")


_ONNX_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}


@pad.implements("onnx_import", names=("Pad",))
def _pad_onnx_import(n, x, pads=None, constant_value=None, axes=None):
    """Pad: pads (and the constant) as inputs from opset 11, as attributes before; axes
    (opset 18) name the axes the pads cover. Modes constant, reflect, edge."""
    from edgekit.converters.from_torch import Unsupported

    mode = n.get("mode", "constant")
    if mode not in _ONNX_MODES:
        raise Unsupported(f"Pad mode {mode!r}")
    rank = len(n.shape(x))
    if n.opset < 11:
        pads, value = n.get("pads"), n.get("value", 0.0)
    else:
        pads = n.const(pads, "Pad with computed pads")
        value = 0.0 if constant_value is None else n.const(constant_value, "Pad with a computed "
                                                                           "constant")
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    covered = (range(rank) if axes is None else
               [int(a) % rank for a in np.asarray(n.const(axes, "Pad with computed axes"))])
    if len(pads) != 2 * len(covered):
        fail(f"Pad: {len(pads)} pads for {len(covered)} axes")
    pairs = [(0, 0)] * rank
    for i, axis in enumerate(covered):
        pairs[axis] = (pads[i], pads[i + len(covered)])
    value = np.asarray(value).reshape(-1)
    if value.size != 1:
        fail(f"Pad: constant_value must be one number, got shape {list(value.shape)}")
    return _emit(n, x, pairs, _ONNX_MODES[mode], float(value[0]))


# --- writers ----------------------------------------------------------------------------------

@pad.implements("tflite")
def _pad_tflite(w, node):
    """In the input's layout: PAD (zeros, the zero point on int8) or PADV2 for another
    constant, MIRROR_PAD REFLECT for reflect. TFLite has no replicate: a pad of 1 is MIRROR_PAD
    SYMMETRIC (the edge copied once), so replicating by p is p SYMMETRIC pads of at most 1."""
    a, name = node.attrs, node.inputs[0]
    layout = w.layout[name]
    pairs = [(0, 0), *_pairs(a["pads"])]
    pairs = [list(pairs[axis]) for axis in layout]
    x, out = w.value(name, layout), w.output(node, layout)
    if a["mode"] == "constant":
        if w.int8:
            fill = pad_value(a["value"], w.graph.tensors[name].quant)
            zero = fill == int(w.graph.tensors[name].quant.zero_point[0])
        else:
            fill, zero = a["value"], a["value"] == 0
        w.pad_axes(x, pairs, None if zero else fill, out=out)
    elif a["mode"] == "reflect":
        w.pad_axes(x, pairs, mirror="REFLECT", out=out)
    else:
        rounds = max(max(pair) for pair in pairs)
        for r in range(rounds):
            step = [[min(1, max(p - r, 0)) for p in pair] for pair in pairs]
            x = w.pad_axes(x, step, mirror="SYMMETRIC", out=out if r == rounds - 1 else None)


@pad.implements("onnx")
def _pad_onnx(e, node, ins):
    """Pad over every axis (the batch's pads zero); edge is ONNX's replicate."""
    a = node.attrs
    k = len(a["pads"]) // 2
    pads = e.const(np.asarray([0, *a["pads"][:k], 0, *a["pads"][k:]], np.int64))
    mode = next(onnx for onnx, ours in _ONNX_MODES.items() if ours == a["mode"])
    extra = [e.const(np.float32(a["value"]))] if a["mode"] == "constant" else []
    return e.add("Pad", [ins[0], pads, *extra], mode=mode)


@pad.implements("c")
def _pad_c(w, i, node):
    """``ek_pad_i8`` on the sample as 4 axes, the constant quantized as the runtime does."""
    from edgekit.runtime.int8 import check_shared

    a, x = node.attrs, node.inputs[0]
    quant = w.quant(node)
    check_shared("pad", quant)
    dims, before, after = _as_4d(w.shape(x)[1:], a["pads"])
    fields = dict(dims=dims, before=before, after=after, mode=MODES.index(a["mode"]),
                  value=pad_value(a["value"], quant[0]))
    return f"ek_pad_i8({w.struct('ek_pad_t', i, fields)}, {w.at(x)}, {w.at(node.outputs[0])});"


# --- gpu target (torch), on-device learning, spiking ------------------------------------------

@pad.implements("gpu")
def _pad_gpu(x, *, pads, mode, value):
    """F.pad for a constant; reflect and replicate gather along each padded axis (F.pad's
    non-constant modes take only the last one to three axes of a 2-D to 5-D tensor)."""
    import torch

    from edgekit.targets.gpu import pad as constant_pad

    if mode == "constant":
        return constant_pad(x, pads, value)
    for axis, (before, after) in enumerate(_pairs(pads), 1):
        if before or after:
            index = np.pad(np.arange(x.shape[axis]), (before, after), mode=_NUMPY_MODES[mode])
            x = x.index_select(axis, torch.as_tensor(index, device=x.device))
    return x


pad.unsupported("learn", "edgekit.learn's blocks are a conv2d/linear, an activation and a pool: "
                         "a pad between them has no stage (a zero pad before a conv is folded "
                         "into the conv's padding at import)")

from edgekit.ops.spiking import no_spiking_form  # noqa: E402

no_spiking_form(pad, "to_snn converts chains of convolutions, pools and linear layers; a "
                     "separate pad has no spiking kernel (a zero pad before a conv is folded "
                     "into the conv at import)")
