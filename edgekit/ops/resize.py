"""resize: nearest and bilinear resizing of NCHW's H and W (up or down) to a given ``size``,
with TFLite's coordinate rules (RESIZE_NEAREST_NEIGHBOR, RESIZE_BILINEAR), every backend's
implementation.

The coordinate rule is TFLite's pair of flags. Neither: asymmetric, ``src = dst * in / out``
(torch's ``nearest``, ONNX ``asymmetric``); ``half_pixel``: ``src = (dst + 0.5) * in / out``
(- 0.5 for bilinear: torch's ``bilinear`` with align_corners=False and ``nearest-exact``, ONNX
``half_pixel``); ``align_corners``: ``src = dst * (in - 1) / (out - 1)`` (nearest rounds half
up). Nearest floors the coordinate (half_pixel's nearest thus rounds ``(dst + 0.5) * in / out -
0.5`` half up); bilinear weighs the two neighbours on each axis, the coordinate clamped to the
input. The coordinates are computed in float32 as TFLite and torch's 2-D kernels both compute
them (``numerics.params.resize_taps``), so a non-integer scale picks the same rows in torch,
LiteRT, tflite-micro, the runtime and the firmware. ONNX Runtime divides by ``out / in``
instead, which picks another row for some sizes: such a nearest Resize is refused on import
and written as two Gathers. The importers take only what they can show to match: torch calls
are run on index ramps and compared, ONNX nearest through ONNX Runtime's arithmetic.

1-D inputs (NCL: torch's ``upsample_nearest1d``/``upsample_linear1d``) import as a resize of
(N, C, 1, L) between two reshapes. On int8, resize keeps its input's quantization
(``first_input``): nearest moves values; bilinear is TFLite's integer interpolation with 10-bit
weights (``ResizeBilinearInteger``), which the runtime, tflite-micro and the firmware compute bit
for bit (its coordinates differ from float32's by the scale's rounding to 1/1024ths).
"""

from __future__ import annotations

import numpy as np

from edgekit.ops import declare
from edgekit.ops.schema import REQUIRED, OpDef, fail, prod
from edgekit.ops.util import finish

MODES = ("nearest", "bilinear")


def _shape(s, a):
    x = s[0]
    if len(x) != 4:
        fail(f"resize expects NCHW input, got {x}")
    size = a["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(type(d) is int and d >= 1
                                                                for d in size)):
        fail(f"resize: attribute 'size' must be [height, width] of positive ints, got {size!r}")
    if a["mode"] not in MODES:
        fail(f"resize: mode must be one of {MODES}, got {a['mode']!r}")
    if a["align_corners"] and a["half_pixel"]:
        fail("resize: align_corners and half_pixel exclude each other (as in TFLite)")
    return (x[0], x[1], *size)


def _macs(i, o, a) -> int:
    return 4 * prod(o) if a["mode"] == "bilinear" else 0


def _coords(n_in, n_out, mode, align_corners, half_pixel):
    """Source coordinates of each output position, float32 as TFLite's reference computes
    them (nearest: the index; bilinear: the unclamped real coordinate)."""
    f32 = np.float32
    corners = align_corners and n_out > 1
    scale = f32(n_in - 1 if corners else n_in) / f32(n_out - 1 if corners else n_out)
    dst = np.arange(n_out, dtype=f32)
    if mode == "bilinear":
        return (dst + f32(0.5)) * scale - f32(0.5) if half_pixel else dst * scale
    pos = (dst + f32(0.5 if half_pixel else 0)) * scale
    index = np.floor(pos) + (align_corners & (pos - np.floor(pos) >= f32(0.5)))
    return np.clip(index.astype(np.int64), 0, n_in - 1)


def _reference(x, *, size, mode, align_corners, half_pixel):
    h, w = x.shape[2:]
    rows, cols = (_coords(n, o, mode, align_corners, half_pixel)
                  for n, o in zip((h, w), size, strict=True))
    x = x.astype(np.float64)
    if mode == "nearest":
        return finish(x[:, :, rows][:, :, :, cols])

    def lerp(v, axis, pos, n):
        pos = np.clip(pos.astype(np.float64), 0, n - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n - 1)
        t = (pos - lo).reshape([-1 if a == axis else 1 for a in range(4)])
        return np.take(v, lo, axis) * (1 - t) + np.take(v, hi, axis) * t

    return finish(lerp(lerp(x, 2, rows, h), 3, cols, w))


resize = declare(OpDef(
    "resize", (1, 1),
    {"size": REQUIRED, "mode": "nearest", "align_corners": False, "half_pixel": False},
    _shape, _macs, quant="first_input", reference=_reference,
    doc="nearest or bilinear resizing of H and W to size [h, w]; TFLite's align_corners and "
        "half_pixel coordinate rules"))


def taps(x_shape, size, mode, align_corners, half_pixel, integer=False):
    """The row then column taps (``numerics.params.resize_taps``) of a resize of ``x_shape``."""
    from edgekit.numerics.params import resize_taps

    return [resize_taps(n, o, mode, align_corners, half_pixel, integer)
            for n, o in zip(x_shape[2:], size, strict=True)]


# --- edgekit runtime --------------------------------------------------------------------------

def _prepare(ins, out, attrs, integer):
    from edgekit.runtime.kernels import resize as k
    from edgekit.runtime.registry import bind

    x = ins[0]
    rows, cols = taps(x.shape, attrs["size"], attrs["mode"], attrs["align_corners"],
                      attrs["half_pixel"], integer)
    if attrs["mode"] == "nearest":
        return bind(k.nearest, x, rows.lo, cols.lo, out)
    return bind(k.bilinear_i8 if integer else k.bilinear_f32, x, rows.lo, rows.hi, rows.frac,
                cols.lo, cols.hi, cols.frac, out)


@resize.implements("float32")
def _float32(ins, out, **attrs):
    return _prepare(ins, out, attrs, False)


@resize.implements("int8")
def _int8(ins, out, *, quant, **attrs):
    from edgekit.runtime.int8 import check_shared

    check_shared("resize", quant)
    return _prepare(ins, out, attrs, True)


# --- importers --------------------------------------------------------------------------------

def _fits(n_in, n_out, scale):
    """Refuse an ONNX linear Resize's scale whose coordinates are not ``in / out``'s: ONNX
    Runtime maps ``dst`` through the given scale, TFLite and the Graph through ``out / in``
    (alike when equal in float32)."""
    from edgekit.converters.from_torch import Unsupported

    if np.float32(scale) != np.float32(n_out) / np.float32(n_in):
        raise Unsupported(f"Resize(scales={scale:g}): {n_in} -> {n_out} reads other source "
                          f"positions than {n_out}/{n_in} (TFLite's rule); give the sizes")


_TORCH_NAMES = ("upsample_nearest2d", "_upsample_nearest_exact2d", "upsample_bilinear2d",
                "upsample_nearest1d", "_upsample_nearest_exact1d", "upsample_linear1d",
                "upsample_bicubic2d", "_upsample_bilinear2d_aa", "_upsample_bicubic2d_aa")


@resize.implements("torch", names=_TORCH_NAMES)
def _torch(c, x, *args, **kwargs):
    """F.interpolate / nn.Upsample as torch.export records them (align_corners is the second
    argument of the linear modes, in every overload); the output size is the one torch
    recorded. The call is checked by running it on ramps (``_torch_reads``), so a scale_factor
    torch maps through ``1 / scale`` rather than ``in / out`` is taken only where both read the
    same source positions."""
    from edgekit.converters.from_torch import Unsupported

    aten = c.aten
    if "bicubic" in aten or aten.endswith("_aa"):
        raise Unsupported(f"{aten}: bicubic and antialiased interpolation have no TFLite or "
                          "firmware kernel to match exactly; use nearest or bilinear")
    linear = "linear" in aten
    align_corners = bool(args[1]) if linear else False
    attrs = {"mode": "bilinear" if linear else "nearest", "align_corners": align_corners,
             "half_pixel": "exact" in aten or (linear and not align_corners)}
    shape = c.b.shape(x.name)
    out = [int(d) for d in c.shape(c.node)[2:]]
    if len(shape) not in (3, 4):
        raise Unsupported(f"{aten} over {len(shape) - 2}-D input")
    _torch_reads(c, shape[2:], out, attrs, args, kwargs)
    if len(shape) == 4:
        return c.emit("resize", [x], {"size": out, **attrs})
    flat = c.emit("reshape", [x], {"shape": [shape[1], 1, shape[2]]})
    y = c.emit("resize", [flat], {"size": [1, out[0]], **attrs})
    return c.emit("reshape", [y], {"shape": [shape[1], out[0]]})


def _torch_reads(c, spatial, out, attrs, args, kwargs):
    """Run the ATen call on ramps (each spatial axis holding its own index) and compare the
    source positions torch reads with the Graph's taps: the same indices for nearest, the same
    coordinates up to float32 rounding for bilinear. torch's 1-D nearest-exact, for one, rounds
    some positions otherwise than its 2-D kernel and TFLite do."""
    import torch

    from edgekit.converters.from_torch import Unsupported
    from edgekit.numerics.params import resize_taps

    for axis, (n_in, n_out) in enumerate(zip(spatial, out, strict=True)):
        view = [1] * len(spatial)
        view[axis] = n_in
        ramp = torch.arange(n_in, dtype=torch.float32).reshape(1, 1, *view)
        got = c.node.target(ramp.expand(1, 1, *spatial).contiguous(), *args, **kwargs)
        got = got[0, 0].movedim(axis, 0).reshape(n_out, -1)[:, 0].double().numpy()
        t = resize_taps(n_in, n_out, **attrs)
        want = t.lo * (1 - t.frac.astype(np.float64)) + t.hi * t.frac.astype(np.float64)
        if not (np.array_equal(got, want) if attrs["mode"] == "nearest" else
                np.allclose(got, want, rtol=0, atol=1e-4)):
            raise Unsupported(f"{c.aten} from {n_in} to {n_out}: torch reads other source "
                              "positions than TFLite's rule (a scale_factor whose 1 / scale is "
                              "not in / out: give the size, or recompute_scale_factor=True)")


_ONNX_RULES = {  # (mode, coordinate_transformation_mode, nearest_mode) -> (align, half)
    ("nearest", "asymmetric", "floor"): (False, False),
    ("nearest", "tf_half_pixel_for_nn", "floor"): (False, True),
    ("nearest", "align_corners", "round_prefer_ceil"): (True, False),
    ("linear", "asymmetric", None): (False, False),
    ("linear", "half_pixel", None): (False, True),
    ("linear", "pytorch_half_pixel", None): (False, True),
    ("linear", "align_corners", None): (True, False),
}


def _ort_nearest(n_in, n_out, coords, scale=None):
    """The input index ONNX Runtime's nearest Resize reads for each output position, in its
    float32 arithmetic (``x / scale``, ``(x + 0.5) / scale``, ``x * (in - 1) / (out - 1)``;
    the scale ``out / in`` when sizes are given), which differs from TFLite's ``x * (in / out)``
    for some sizes (14 -> 2 reads row 6 for output 1, TFLite row 7). Checked against ONNX
    Runtime over every size pair up to 32 -> 64; its half_pixel + round_prefer_ceil rounds a
    few ties otherwise still, so that rule is not taken."""
    f32 = np.float32
    s = f32(n_out) / f32(n_in) if scale is None else f32(scale)
    x = np.arange(n_out, dtype=f32)
    if coords == "align_corners":
        o = np.zeros(n_out, f32) if n_out == 1 else x * f32(n_in - 1) / f32(n_out - 1)
        tie = o == np.trunc(o) + f32(0.5)
        index = np.where(tie, np.ceil(o), np.round(o))  # round_prefer_ceil
    else:
        index = np.floor(x / s if coords == "asymmetric" else (x + f32(0.5)) / s)
    return np.clip(index.astype(np.int64), 0, n_in - 1)


@resize.implements("onnx_import", names=("Resize",))
def _onnx_import(n, x, roi=None, scales=None, sizes=None):
    """Resize (opset 11+) with constant scales or sizes; the N and C entries must keep the
    tensor (the batch entry of sizes may be anything: the batch is free)."""
    from edgekit.converters.from_torch import Unsupported

    shape = n.shape(x)
    mode = n.get("mode", "nearest")
    coords = n.get("coordinate_transformation_mode", "half_pixel")
    nearest_mode = n.get("nearest_mode", "round_prefer_floor") if mode == "nearest" else None
    rule = _ONNX_RULES.get((mode, coords, nearest_mode))
    if n.opset < 11 or rule is None:
        raise Unsupported(f"Resize(mode={mode}, coordinate_transformation_mode={coords}"
                          + (f", nearest_mode={nearest_mode})" if nearest_mode else ")")
                          + (" before opset 11" if n.opset < 11 else ""))
    if n.get("antialias", 0) or n.get("axes") is not None or \
            n.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise Unsupported("Resize with antialias, axes or keep_aspect_ratio_policy")
    if len(shape) != 4:
        raise Unsupported(f"Resize over {len(shape) - 2}-D input")
    have_sizes = sizes is not None and np.size(n.const(sizes, "Resize with computed sizes"))
    if have_sizes:
        out = [int(d) for d in np.asarray(sizes).reshape(-1)]
        if len(out) != 4 or out[1] != shape[1]:
            fail(f"Resize sizes {out} must be [N, {shape[1]}, H, W] for input {list(shape)}")
        out, factors = out[2:], [None, None]
    else:
        factors = [float(s) for s in np.asarray(n.const(scales, "Resize with computed scales"),
                                                np.float64).reshape(-1)]
        if len(factors) != 4 or factors[:2] != [1.0, 1.0] or \
                not all(np.isfinite(f) and f > 0 for f in factors):
            fail(f"Resize scales {factors} must be [1, 1, h, w] (positive) for NCHW input")
        factors = factors[2:]
        out = [int(np.floor(d * s)) for d, s in zip(shape[2:], factors, strict=True)]
    align, half = rule
    if coords == "pytorch_half_pixel" and any(o == 1 and i > 1 for i, o in
                                              zip(shape[2:], out, strict=True)):
        raise Unsupported("Resize(pytorch_half_pixel) to a length of 1")
    for n_in, n_out, s in zip(shape[2:], out, factors, strict=True):
        if mode == "nearest":
            if not np.array_equal(_ort_nearest(n_in, n_out, coords, s),
                                  _coords(n_in, n_out, mode, align, half)):
                raise Unsupported(f"Resize(nearest, {coords}) from {n_in} to {n_out}: ONNX "
                                  "Runtime's float32 coordinates pick other rows than TFLite's")
        elif s is not None and not align:
            _fits(n_in, n_out, s)
    mode = "bilinear" if mode == "linear" else "nearest"
    return n.emit("resize", [x], {"size": out, "mode": mode, "align_corners": align,
                                  "half_pixel": half})


# --- writers ----------------------------------------------------------------------------------

@resize.implements("tflite", channels_last=True)
def _tflite(w, node):
    """RESIZE_NEAREST_NEIGHBOR / RESIZE_BILINEAR on NHWC, the size an int32 constant."""
    from edgekit.converters.to_tflite import channels_last

    a = node.attrs
    x = w.value(node.inputs[0], channels_last(4))
    out = w.output(node, channels_last(4))
    kind = "ResizeNearestNeighbor" if a["mode"] == "nearest" else "ResizeBilinear"
    code = "RESIZE_NEAREST_NEIGHBOR" if a["mode"] == "nearest" else "RESIZE_BILINEAR"
    w.op(code, [x, w.int32(a["size"])], [out],
         w.options(kind, alignCorners=a["align_corners"], halfPixelCenters=a["half_pixel"]))


@resize.implements("onnx")
def _onnx(e, node, ins):
    """Resize with sizes [N, C] of the input (Shape) and the Graph's [h, w], in the coordinate
    mode that computes TFLite's coordinates (the ONNX importer reads it back). Nearest where
    ONNX Runtime's float32 arithmetic picks other rows (``_ort_nearest``; its half-pixel
    nearest always) is two Gathers of the rows and columns the runtime reads: exact."""
    a = node.attrs
    coords = ("align_corners" if a["align_corners"] else
              "half_pixel" if a["half_pixel"] else "asymmetric")
    if a["mode"] == "bilinear":
        extra = {"mode": "linear"}
    else:
        shape = e.graph.tensors[node.inputs[0]].shape
        rows, cols = taps(shape, a["size"], "nearest", a["align_corners"], a["half_pixel"])
        if a["half_pixel"] or not all(
                np.array_equal(_ort_nearest(n, o, coords), t.lo)
                for n, o, t in zip(shape[2:], a["size"], (rows, cols), strict=True)):
            y = e.add("Gather", [ins[0], e.const(rows.lo.astype(np.int64))], axis=2)
            return e.add("Gather", [y, e.const(cols.lo.astype(np.int64))], axis=3)
        extra = {"mode": "nearest",
                 "nearest_mode": "round_prefer_ceil" if a["align_corners"] else "floor"}
    lead = e.add("Shape", [ins[0]], start=0, end=2)
    sizes = e.add("Concat", [lead, e.const(np.asarray(a["size"], np.int64))], axis=0)
    return e.add("Resize", [ins[0], "", "", sizes], coordinate_transformation_mode=coords,
                 **extra)


@resize.implements("c")
def _c(w, i, node):
    """``ek_resize_nearest`` / ``ek_resize_bilinear`` over the taps the runtime reads."""
    a = node.attrs
    xs = w.shape(node.inputs[0])
    rows, cols = taps(xs, a["size"], a["mode"], a["align_corners"], a["half_pixel"], True)
    fields = dict(c=xs[1], h=xs[2], w=xs[3], oh=a["size"][0], ow=a["size"][1],
                  y0=w.array("int16_t", rows.lo), x0=w.array("int16_t", cols.lo))
    if a["mode"] == "nearest":
        fn = "ek_resize_nearest"
    else:
        fn = "ek_resize_bilinear"
        fields.update(y1=w.array("int16_t", rows.hi), wy=w.array("int16_t", rows.frac),
                      x1=w.array("int16_t", cols.hi), wx=w.array("int16_t", cols.frac))
    return f"{fn}({w.struct('ek_resize_t', i, fields)}, {w.at(node.inputs[0])}, " \
           f"{w.at(node.outputs[0])});"


# --- gpu target (torch), on-device learning, spiking backends ---------------------------------

@resize.implements("gpu")
def _gpu(x, *, size, mode, align_corners, half_pixel):
    """F.interpolate where torch has the rule (nearest, nearest-exact, bilinear with or without
    align_corners); TFLite's other two (nearest with align_corners, asymmetric bilinear) as a
    gather of the taps the runtime reads."""
    import torch
    import torch.nn.functional as F

    if mode == "nearest" and not align_corners:
        return F.interpolate(x, size=size, mode="nearest-exact" if half_pixel else "nearest")
    if mode == "bilinear" and (align_corners or half_pixel):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)
    rows, cols = taps(x.shape, size, mode, align_corners, half_pixel)

    def lerp(v, axis, t):
        lo, hi = (torch.tensor(i, dtype=torch.long, device=v.device) for i in (t.lo, t.hi))
        frac = torch.tensor(t.frac, device=v.device).reshape(
            [-1 if a == axis else 1 for a in range(4)])
        return v.index_select(axis, lo) * (1 - frac) + v.index_select(axis, hi) * frac

    return lerp(lerp(x, 2, rows), 3, cols)


resize.unsupported("learn", "resize is not a layer of the sequential conv/linear chains "
                            "finetune trains")

from edgekit.ops.spiking import no_spiking_form, same_every_step  # noqa: E402

same_every_step(resize)
no_spiking_form(resize, "resize runs in float32 spiking Graphs (on the runtime; the unrolled "
                        "ONNX writes it as float32 Graphs do); int8 spiking Graphs and the "
                        "firmware's spiking schedule have no form of it",
                ("spiking_int8", "quant_spiking", "onnx_spiking", "c_spiking"))
