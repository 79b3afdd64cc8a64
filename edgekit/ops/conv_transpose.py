"""Transposed convolution: conv_transpose2d, NCHW (ConvTranspose1d is imported as it, on a
height-1 view between reshapes, exactly).

The weight is stored output-channels-first, (Cout, Cin / groups, kh, kw): the importers move
torch's and ONNX's (Cin, Cout / groups, kh, kw) there once, so that int8 quantization's
per-channel axis 0, the load check of the int32 accumulator (one weight row per output
channel), ``numerics.params.conv_params`` and TFLite's OHWI filter all read output channels on
axis 0, as for conv2d. ``padding`` is [top, left, bottom, right] cropped off the full
transposed convolution ((H - 1) * stride + dilation * (k - 1) + 1 rows); ``output_padding``
adds rows and columns at the bottom and right (torch's and ONNX's output_padding). int8
computes what tflite-micro's TRANSPOSE_CONV computes: int32 sums of ``(x - zp_in) * w``, the
int32 bias, per-channel requantization (``conv_params``' multipliers).
"""

from __future__ import annotations

import numpy as np

from edgekit.ops import declare
from edgekit.ops.schema import OpDef, fail, prod
from edgekit.ops.util import finish, float_bias


def _full(size: int, k: int, stride: int, dilation: int) -> int:
    """Length of the uncropped transposed convolution over ``size`` inputs."""
    return (size - 1) * stride + dilation * (k - 1) + 1


def _shape(s, a):
    x, w = s[0], s[1]
    groups = a["groups"]
    if len(x) != 4 or len(w) != 4:
        fail(f"conv_transpose2d expects rank-4 input and weight, got {x} and {w}")
    if x[1] % groups or w[0] % groups:
        fail(f"groups={groups} must divide input channels {x[1]} and output channels {w[0]}")
    if w[1] * groups != x[1]:
        fail(f"weight {w} (Cout, Cin / groups, kh, kw) expects {w[1] * groups} input channels, "
             f"input has {x[1]}")
    if len(s) > 2 and tuple(s[2]) != (w[0],):
        fail(f"bias shape {s[2]} does not match {w[0]} output channels")
    out = []
    for i in range(2):
        extra, stride, dil = a["output_padding"][i], a["stride"][i], a["dilation"][i]
        if not 0 <= extra < max(stride, dil):
            fail(f"output_padding {a['output_padding']} must be at least 0 and smaller than "
                 f"the stride {a['stride']} or the dilation {a['dilation']}")
        size = (_full(x[2 + i], w[2 + i], stride, dil) - a["padding"][i] - a["padding"][2 + i]
                + extra)
        if size < 1:
            fail(f"padding {a['padding']} crops all of the transposed convolution of {x}")
        out.append(size)
    return (x[0], w[0], *out)


def _macs(i, o, a) -> int:
    """Every input element times its group's output channels and the kernel's taps."""
    return prod(i[0]) * i[1][0] // a["groups"] * prod(i[1][2:])


def _reference(x, w, b=None, *, stride, padding, output_padding, dilation, groups):
    """Scatter: each tap (ky, kx) adds x times its weights onto a strided grid of the full
    output, which is then cropped by the padding (and extended by output_padding)."""
    n, cin, h, wd = x.shape
    cout, per_group, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    fh, fw = _full(h, kh, sh, dh), _full(wd, kw, sw, dw)
    xg = x.astype(np.float64).reshape(n, groups, per_group, h, wd)
    wg = w.astype(np.float64).reshape(groups, cout // groups, per_group, kh, kw)
    canvas = np.zeros((n, groups, cout // groups, fh + output_padding[0], fw + output_padding[1]))
    for ky in range(kh):
        for kx in range(kw):
            canvas[..., ky * dh:ky * dh + (h - 1) * sh + 1:sh,
                   kx * dw:kx * dw + (wd - 1) * sw + 1:sw] += np.einsum(
                "ngchw,goc->ngohw", xg, wg[..., ky, kx])
    pt, pl, pb, pr = padding
    y = canvas.reshape(n, cout, *canvas.shape[3:])[
        :, :, pt:fh + output_padding[0] - pb, pl:fw + output_padding[1] - pr]
    if b is not None:
        y = y + b.astype(np.float64)[:, None, None]
    return finish(y)


conv_transpose2d = declare(OpDef(
    "conv_transpose2d", (2, 3),
    {"stride": [1, 1], "padding": [0, 0, 0, 0], "output_padding": [0, 0], "dilation": [1, 1],
     "groups": 1},
    _shape, _macs, weight_inputs=(1, 2), int8_weights=True, reference=_reference,
    doc="2-D transposed convolution, NCHW, weight (Cout, Cin/groups, kh, kw); padding is "
        "[top, left, bottom, right] cropped off the full output"))


# --- runtime: float32 and int8 ------------------------------------------------------------------

def _float32_scratch(shapes, out_shape, **_) -> int:
    """One sample, channels-last (``kernels.conv_transpose.channels_last``)."""
    return 4 * prod(shapes[0][1:])


def _reordered(w: np.ndarray, dtype) -> np.ndarray:
    """(O, C, KH, KW) weights as the kernels' (O, KH, KW, C)."""
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1), dtype)


@conv_transpose2d.implements("float32", scratch=_float32_scratch)
def _float32(ins, out, *, stride, padding, output_padding, dilation, groups, scratch):
    from edgekit.runtime.kernels import conv_transpose
    from edgekit.runtime.registry import sequence

    x, w = ins[0], ins[1]
    b, weights = float_bias(ins, w.shape[0]), _reordered(w, np.float32)
    sample = scratch.view(np.float32).reshape(*x.shape[2:], x.shape[1])
    geometry = tuple(stride), tuple(padding[:2]), tuple(dilation)
    calls: list[tuple] = []
    for n in range(x.shape[0]):
        calls += [(conv_transpose.channels_last, x[n], np.float32(0), sample),
                  (conv_transpose.conv_transpose2d, sample, weights, b, *geometry, out[n])]
    return sequence(calls)


def _int8_scratch(shapes, out_shape, **_) -> int:
    """One sample less its zero point, channels-last, int16."""
    from edgekit.runtime.int8 import scratch_bytes

    return scratch_bytes(((*shapes[0][2:], shapes[0][1]), np.int16))


@conv_transpose2d.implements("int8", scratch=_int8_scratch)
def _int8(ins, out, *, stride, padding, output_padding, dilation, groups, quant, scratch):
    from edgekit.numerics.params import conv_params
    from edgekit.runtime.int8 import carve
    from edgekit.runtime.kernels import conv_transpose
    from edgekit.runtime.registry import sequence

    x, w = ins[0], ins[1]
    p = conv_params(quant, w, ins[2] if len(ins) > 2 else None, "none")
    (sample,) = carve(scratch, ((*x.shape[2:], x.shape[1]), np.int16))
    geometry = tuple(stride), tuple(padding[:2]), tuple(dilation)
    weights, calls = _reordered(w, np.int16), []
    for n in range(x.shape[0]):
        calls += [(conv_transpose.channels_last, x[n], np.int16(p.in_zp), sample),
                  (conv_transpose.int8_conv_transpose2d, sample, weights, ins[2], *geometry,
                   p.mult, p.shift, p.out_zp, p.lo, p.hi, out[n])]
    return sequence(calls)


# --- importers ----------------------------------------------------------------------------------

def _output_channels_first(w: np.ndarray, groups: int) -> np.ndarray:
    """torch's/ONNX's (Cin, Cout / groups, *k) weight as the Graph's (Cout, Cin / groups, *k),
    and back: swapping the two channel axes within each group is its own inverse."""
    cin, per_group, *k = w.shape
    return np.ascontiguousarray(w.reshape(groups, cin // groups, per_group, *k).swapaxes(1, 2)
                                ).reshape(groups * per_group, cin // groups, *k)


def _emit(c, x, w, bias, stride, pads, output_padding, dilation, groups):
    """conv_transpose2d from a constant (Cin, Cout / groups, *k) weight of 1 or 2 spatial dims,
    on either importer's call ``c``; ``pads`` is [begins..., ends...]. A 1-D one runs on the
    (N, C, 1, L) view of its input, between reshapes."""
    from edgekit.converters.from_torch import Unsupported

    nd = w.ndim - 2
    if nd not in (1, 2) or len(c.b.shape(x.name)) != nd + 2:
        raise Unsupported(f"conv_transpose{nd}d")
    groups = int(groups)
    if groups < 1 or w.shape[0] % groups:
        raise Unsupported(f"conv_transpose{nd}d with groups={groups}")
    ints = [[int(v) for v in values] for values in (stride, pads, output_padding, dilation)]
    if nd == 1:
        w = w[:, :, None, :]
        x = c.emit("reshape", [x], {"shape": [c.b.shape(x.name)[1], 1, c.b.shape(x.name)[2]]})
        ints = [[1, *ints[0]], [0, ints[1][0], 0, ints[1][1]], [0, *ints[2]], [1, *ints[3]]]
    inputs = [x, c.param(_output_channels_first(w, groups), "weight")]
    if bias is not None:
        inputs.append(c.param(bias, "bias"))
    attrs = dict(zip(("stride", "padding", "output_padding", "dilation"), ints, strict=True))
    y = c.emit("conv_transpose2d", inputs, {**attrs, "groups": groups})
    if nd == 1:
        shape = c.b.shape(y.name)
        y = c.emit("reshape", [y], {"shape": [shape[1], shape[3]]})
    return y


@conv_transpose2d.implements("torch", names=("conv_transpose2d", "conv_transpose1d"))
def _torch(c, x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
           dilation=1):
    """aten.conv_transpose1d/2d; core ATen's aten.convolution(transposed=True) comes here too."""
    from edgekit.converters.from_torch import ints

    w = c.const(weight, "conv_transpose")
    nd = w.ndim - 2
    return _emit(c, x, w, c.const(bias, "conv_transpose"), ints(stride, nd),
                 ints(padding, nd) * 2, ints(output_padding, nd), ints(dilation, nd), groups)


@conv_transpose2d.implements("onnx_import", names=("ConvTranspose",))
def _onnx_import(n, x, w, bias=None):
    """ConvTranspose of 1 or 2 spatial dims with explicit pads (or auto_pad VALID)."""
    from edgekit.converters.from_torch import Unsupported

    w = n.const(w, "ConvTranspose with a non-constant weight")
    bias = None if bias is None else n.const(bias, "ConvTranspose with a non-constant bias")
    nd = w.ndim - 2
    auto = n.get("auto_pad", "NOTSET")
    if n.get("output_shape") is not None or auto not in ("NOTSET", "VALID"):
        raise Unsupported("ConvTranspose with output_shape or auto_pad SAME (give its pads and "
                          "output_padding)")
    if auto == "VALID" and "pads" in n.attrs:
        fail(f"ConvTranspose: auto_pad=VALID and explicit pads {n.get('pads')} together")
    pads = n.get("pads", [0] * 2 * nd)
    stride, dil = n.get("strides", [1] * nd), n.get("dilations", [1] * nd)
    extra = n.get("output_padding", [0] * nd)
    if not len(stride) == len(dil) == len(extra) == nd or len(pads) != 2 * nd:
        fail(f"ConvTranspose: strides {stride}, dilations {dil}, output_padding {extra} and "
             f"pads {pads} do not fit a {nd}-D kernel")
    return _emit(n, x, w, bias, stride, pads, extra, dil, n.get("group", 1))


# --- writers ------------------------------------------------------------------------------------

def _tflite_same(in_hw, out_hw, kernel, stride, padding) -> bool:
    """Whether TFLite's SAME padding of a TRANSPOSE_CONV with output ``out_hw`` crops exactly
    ``padding``'s top and left: TFLite pads ``total // 2`` before, total from the ceil(out /
    stride) inputs SAME implies (which must be the real input count)."""
    for i in range(2):
        inputs = -(-out_hw[i] // stride[i])
        total = max((inputs - 1) * stride[i] + kernel[i] - out_hw[i], 0)
        if inputs != in_hw[i] or total // 2 != padding[i]:
            return False
    return True


def _tflite_output_shape(w, x, hwc: list[int]) -> int:
    """TRANSPOSE_CONV's output_shape input, [batch of ``x``, *hwc]: computed (SHAPE, SLICE,
    CONCATENATION) so that LiteRT, which resizes the batch, keeps it; tflite-micro reads the
    output tensor's own shape."""
    name = w.tensors[x].name
    shape = w.tensor(f"{name}/shape", [4], "int32")
    w.op("SHAPE", [x], [shape], w.options("Shape", outType=w.s.TensorType.INT32))
    batch = w.tensor(f"{name}/batch", [1], "int32")
    w.op("SLICE", [shape, w.int32([0]), w.int32([1])], [batch])
    out = w.tensor(f"{name}/output_shape", [4], "int32")
    w.op("CONCATENATION", [batch, w.int32(hwc)], [out], w.options("Concatenation", axis=0))
    return out


@conv_transpose2d.implements("tflite", channels_last=True)
def _tflite(w, node):
    """TRANSPOSE_CONV (OHWI filter, NHWC): SAME when its padding is the Graph's, else VALID
    onto the uncropped output, then a SLICE from the top/left padding. LiteRT requires a VALID
    output of (in - 1) * stride + k to that plus stride - 1 (rows past the full output, from
    output_padding, get the bias), so the VALID one is the full output or the Graph's with the
    top/left padding, whichever is longer."""
    from edgekit.converters.to_tflite import channels_last
    from edgekit.errors import EdgekitError

    a = node.attrs
    if a["dilation"] != [1, 1]:
        raise EdgekitError(f"TFLite's TRANSPOSE_CONV has no dilation (got {a['dilation']})")
    weight = w.graph.params[node.inputs[1]]
    if a["groups"] != 1:
        raise EdgekitError(f"TFLite's TRANSPOSE_CONV has no groups (got {a['groups']}); split "
                           "it into groups=1 transposed convolutions and a concat")
    x = w.value(node.inputs[0], channels_last(4))
    out = w.output(node, channels_last(4))
    n, oh, ow, cout = w.shape(out)
    kernel, (pt, pl) = list(weight.shape[2:]), a["padding"][:2]
    same = _tflite_same(w.shape(x)[1:3], [oh, ow], kernel, a["stride"], [pt, pl])
    uncropped = [max(pad + size, _full(length, k, stride, 1)) for pad, size, length, k, stride
                 in zip((pt, pl), (oh, ow), w.shape(x)[1:3], kernel, a["stride"], strict=True)]
    crop = not same and uncropped != [oh, ow]
    full = w.derived(out, [n, *uncropped, cout], "/uncropped") if crop else out
    opts = w.options("TransposeConv", padding=getattr(w.s.Padding, "SAME" if same else "VALID"),
                     strideH=a["stride"][0], strideW=a["stride"][1])
    filt = w.weight(node, weight.transpose(0, 2, 3, 1), 0)
    w.op("TRANSPOSE_CONV", [_tflite_output_shape(w, x, w.shape(full)[1:]), filt, x,
                            w.bias(node, cout)], [full], opts)
    if crop:
        w.op("SLICE", [full, w.int32([0, pt, pl, 0]), w.int32([-1, oh, ow, cout])], [out])


@conv_transpose2d.implements("onnx")
def _onnx(e, node, ins):
    """ConvTranspose, its weight moved back to ONNX's (Cin, Cout / groups, kh, kw) in the graph
    (a Transpose, or Reshape-Transpose-Reshape across groups), after any DequantizeLinear."""
    a = node.attrs
    groups, (cout, per_group, kh, kw) = a["groups"], e.graph.params[node.inputs[1]].shape
    weight = ins[1]
    if groups == 1:
        weight = e.add("Transpose", [weight], perm=[1, 0, 2, 3])
    else:
        split = e.const(np.array([groups, cout // groups, per_group, kh, kw], np.int64))
        grouped = e.add("Transpose", [e.add("Reshape", [weight, split])], perm=[0, 2, 1, 3, 4])
        merged = e.const(np.array([groups * per_group, cout // groups, kh, kw], np.int64))
        weight = e.add("Reshape", [grouped, merged])
    return e.add("ConvTranspose", [ins[0], weight, *ins[2:]], strides=a["stride"],
                 pads=a["padding"], output_padding=a["output_padding"], dilations=a["dilation"],
                 group=groups)


@conv_transpose2d.implements("c")
def _c(w, i, node):
    """``ek_conv_transpose2d`` on an ``ek_conv_t`` (its bias the int32 bias as it is)."""
    from edgekit.numerics.params import conv_params

    a, weight = node.attrs, w.graph.params[node.inputs[1]]
    xs, ys = w.shape(node.inputs[0]), w.shape(node.outputs[0])
    bias = w.graph.params.get(node.inputs[2]) if len(node.inputs) > 2 else None
    p = conv_params(w.quant(node), weight, bias, "none")
    fields = dict(cin=xs[1], h=xs[2], w=xs[3], cout=ys[1], oh=ys[2], ow=ys[3],
                  kh=weight.shape[2], kw=weight.shape[3], sh=a["stride"][0], sw=a["stride"][1],
                  pt=a["padding"][0], pl=a["padding"][1], dh=a["dilation"][0],
                  dw=a["dilation"][1], groups=a["groups"], in_zp=p.in_zp, out_zp=p.out_zp,
                  lo=p.lo, hi=p.hi, weight=w.array("int8_t", weight),
                  bias=w.array("int32_t", bias), mult=w.array("int32_t", p.mult),
                  shift=w.array("int32_t", p.shift))
    return (f"ek_conv_transpose2d({w.struct('ek_conv_t', i, fields)}, "
            f"{w.at(node.inputs[0])}, {w.at(node.outputs[0])});")


# --- other consumers ----------------------------------------------------------------------------

@conv_transpose2d.implements("gpu")
def _gpu(x, w, b=None, *, stride, padding, output_padding, dilation, groups):
    """torch's conv_transpose2d uncropped, extended by output_padding with zeros, cropped by
    the (possibly uneven) padding, then the bias."""
    import torch.nn.functional as F

    wt = w.reshape(groups, -1, *w.shape[1:]).transpose(1, 2).reshape(-1, w.shape[0] // groups,
                                                                      *w.shape[2:])
    y = F.conv_transpose2d(x, wt, None, stride, 0, 0, groups, dilation)
    y = F.pad(y, (0, output_padding[1], 0, output_padding[0]))
    pt, pl, pb, pr = padding
    y = y[:, :, pt:y.shape[2] - pb, pl:y.shape[3] - pr]
    return y if b is None else y + b[:, None, None]


conv_transpose2d.unsupported("learn", "edgekit.learn trains conv2d and linear layers; a "
                                      "transposed convolution has no trainable block")

from edgekit.ops.spiking import no_spiking_form, same_every_step  # noqa: E402

same_every_step(conv_transpose2d)
no_spiking_form(conv_transpose2d, "spiking Graphs take conv2d and linear synapses: "
                                  "conv_transpose2d runs densely, only in float32 spiking "
                                  "Graphs on the runtime and in ONNX",
                ("spiking_int8", "quant_spiking", "onnx_spiking", "c_spiking"))
