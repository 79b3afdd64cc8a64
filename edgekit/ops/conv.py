"""Convolutions: conv2d (depthwise when groups == channels) and conv1d, NC[H]W, OI[H]W weights.

Every backend of conv1d is conv2d's on a height-1 view (runtime, TFLite, firmware C) or the
same call with one spatial axis (ONNX, torch). The runtime picks one of three forms per node:
one input channel per output channel (depthwise, on zero-padded planes split by stride phase),
a pointwise convolution (a product with the input planes as they are), or the general form (a
padded channels-last copy, then per group its window rows times the weight rows). int8
convolutions requantize with ``numerics.params.conv_params``, which the C writer reads too.
"""

from __future__ import annotations

import numpy as np

from edgekit.ops import declare
from edgekit.ops.schema import OpDef, fail, prod, window_out
from edgekit.ops.util import finish, float_bias, windows


def _check(x, w, b, groups, nd):
    if len(x) != nd + 2 or len(w) != nd + 2:
        fail(f"conv{nd}d expects rank-{nd + 2} input and weight, got {x} and {w}")
    if groups < 1 or x[1] % groups or w[0] % groups:
        fail(f"groups={groups} must divide input channels {x[1]} and output channels {w[0]}")
    if w[1] * groups != x[1]:
        fail(f"weight {w} expects {w[1] * groups} input channels, input has {x[1]}")
    if b is not None and tuple(b) != (w[0],):
        fail(f"bias shape {b} does not match {w[0]} output channels")


def _conv_macs(i, o, a) -> int:
    return prod(o) * prod(i[1][1:])


def _conv2d_shape(s, a):
    x, w = s[0], s[1]
    _check(x, w, s[2] if len(s) > 2 else None, a["groups"], 2)
    pt, pl, pb, pr = a["padding"]
    oh = window_out(x[2], w[2], a["stride"][0], pt + pb, a["dilation"][0])
    ow = window_out(x[3], w[3], a["stride"][1], pl + pr, a["dilation"][1])
    return (x[0], w[0], oh, ow)


def _conv2d_reference(x, w, b=None, *, stride, padding, dilation, groups, activation):
    o, per_group, kh, kw = w.shape
    win = windows(x, (kh, kw), stride, padding, dilation, 0.0)  # N, C, OH, OW, K
    n, _, oh, ow, k = win.shape
    win = win.reshape(n, groups, per_group, oh, ow, k)
    wg = w.astype(np.float64).reshape(groups, o // groups, per_group, k)
    y = np.einsum("ngchwk,gock->ngohw", win, wg).reshape(n, o, oh, ow)
    if b is not None:
        y = y + b.astype(np.float64)[:, None, None]
    return finish(y, activation)


conv2d = declare(OpDef(
    "conv2d", (2, 3),
    {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1,
     "activation": "none"},
    _conv2d_shape, _conv_macs, weight_inputs=(1, 2), int8_weights=True, reference=_conv2d_reference,
    doc="2-D convolution, NCHW; padding is [top, left, bottom, right]; depthwise when groups == C"))


def _conv1d_shape(s, a):
    x, w = s[0], s[1]
    _check(x, w, s[2] if len(s) > 2 else None, a["groups"], 1)
    ol = window_out(x[2], w[2], a["stride"][0], sum(a["padding"]), a["dilation"][0])
    return (x[0], w[0], ol)


def _conv1d_reference(x, w, b=None, *, stride, padding, dilation, groups, activation):
    y = _conv2d_reference(x[:, :, None], w[:, :, None], b, stride=[1, stride[0]],
                          padding=[0, padding[0], 0, padding[1]], dilation=[1, dilation[0]],
                          groups=groups, activation=activation)
    return y[:, :, 0]


conv1d = declare(OpDef(
    "conv1d", (2, 3),
    {"stride": [1], "padding": [0, 0], "dilation": [1], "groups": 1, "activation": "none"},
    _conv1d_shape, _conv_macs, weight_inputs=(1, 2), int8_weights=True, reference=_conv1d_reference,
    doc="1-D convolution, NCL; padding is [left, right]"))


# --- runtime: float32 and int8 ------------------------------------------------------------------

def _phases_shape(w_shape, out_shape, stride, dilation) -> tuple[int, int, int]:
    """(SH * SW, QH, QW): the zero-padded input plane a depthwise convolution's windows cover,
    split by stride phase (``strided_depthwise``; one phase, the plane itself, at stride 1)."""
    qh, qw = (-(-((o - 1) * s + (k - 1) * d + 1) // s) for o, k, s, d in zip(
        out_shape[2:], w_shape[2:], stride, dilation, strict=True))
    return stride[0] * stride[1], qh, qw


def _pointwise(w_shape, stride, padding, groups) -> bool:
    """A 1x1 stride-1 unpadded convolution of one group: a product of the weights with the
    input's planes as they are."""
    return (tuple(w_shape[2:]) == (1, 1) and tuple(stride) == (1, 1) and not any(padding)
            and groups == 1)


def _channels_last_parts(x_shape, w_shape, out_shape, padding) -> list[tuple[int, ...]]:
    """Shapes of the padded channels-last sample and of one group's window rows."""
    t, left, bottom, right = padding
    return [(x_shape[2] + t + bottom, x_shape[3] + left + right, x_shape[1]),
            (prod(out_shape[2:]), prod(w_shape[1:]))]


def _float32_scratch(shapes, out_shape, *, groups, padding, stride, dilation, **_) -> int:
    """For one sample: with one input channel per output channel, the padded plane split by
    stride phase and its sums at the phase width; none for a pointwise convolution; else the
    padded channels-last sample and one group's window rows."""
    w = shapes[1]
    if w[1] == 1:
        phases = _phases_shape(w, out_shape, stride, dilation)
        return 4 * (prod(phases) + out_shape[2] * phases[2])
    if _pointwise(w, stride, padding, groups):
        return 0
    return 4 * sum(prod(shape) for shape in _channels_last_parts(shapes[0], w, out_shape,
                                                                  padding))


@conv2d.implements("float32", scratch=_float32_scratch)
def _conv2d_float32(ins, out, *, stride, padding, dilation, groups, activation, scratch):
    from edgekit.runtime.kernels import conv, elementwise
    from edgekit.runtime.registry import sequence

    x, w = ins[0], ins[1]
    b, bounds = float_bias(ins, w.shape[0]), elementwise.ACTIVATION_BOUNDS[activation]
    if w.shape[1] == 1:
        return _depthwise_float32(x, w, b, bounds, tuple(stride), padding, tuple(dilation),
                                  scratch, out)
    if _pointwise(w.shape, stride, padding, groups):
        weights = w.reshape(w.shape[0], w.shape[1])
        return sequence([(conv.pointwise, x[n].reshape(x.shape[1], -1), weights, b, *bounds,
                          out[n].reshape(out.shape[1], -1)) for n in range(x.shape[0])])
    return _channels_last_float32(x, w, b, bounds, stride, padding, dilation, groups, scratch,
                                  out)


def _channels_last_float32(x, w, b, bounds, stride, padding, dilation, groups, scratch, out):
    """Per sample: one padded channels-last copy, then per group the window rows (each a few
    contiguous runs of the copy, ordered (ky, kx, channel) like the reordered weights) and
    their product with the weight rows. The int8 path's copy and rows kernels, on float32."""
    from edgekit.runtime.kernels import int8_conv, linear
    from edgekit.runtime.registry import sequence

    padded_shape, rows_shape = _channels_last_parts(x.shape, w.shape, out.shape, padding)
    padded, rows = np.split(scratch.view(np.float32), [prod(padded_shape)])
    padded, rows = padded.reshape(padded_shape), rows.reshape(rows_shape)
    per_group, channels = w.shape[1], w.shape[0]
    weights = np.ascontiguousarray(w.reshape(groups, -1, *w.shape[1:]).transpose(0, 1, 3, 4, 2)
                                   ).reshape(groups, channels // groups, -1)
    biases, geometry = b.reshape(groups, -1), (tuple(stride), tuple(dilation))
    calls: list[tuple] = []
    for n in range(x.shape[0]):
        outs = out[n].reshape(groups, -1, rows.shape[0])
        calls.append((int8_conv.pad_channels_last, x[n], 0, padding[0], padding[1], padded))
        for g in range(groups):
            calls += [(int8_conv.window_rows, padded, tuple(w.shape[2:]), *geometry,
                       g * per_group, per_group, out.shape[3], rows),
                      (linear.gemm_nt, weights[g], rows, biases[g], True, *bounds, outs[g])]
    return sequence(calls)


def _depthwise_float32(x, w, b, bounds, stride, padding, dilation, scratch, out):
    """One call per sample on zero-padded planes: ``conv.depthwise_planes`` at stride 1 (one
    phase, the plane itself), else ``conv.strided_depthwise``."""
    from edgekit.runtime.kernels import conv
    from edgekit.runtime.registry import sequence

    shape = _phases_shape(w.shape, out.shape, stride, dilation)
    phases, acc = np.split(scratch.view(np.float32), [prod(shape)])
    if stride == (1, 1):
        kernel, geometry, plane = conv.depthwise_planes, (dilation,), phases
    else:
        kernel, geometry, plane = conv.strided_depthwise, (stride, dilation), phases.reshape(shape)
    return sequence([(kernel, x[n], padding[0], padding[1], np.ascontiguousarray(w[:, 0]), b,
                      *geometry, *bounds, plane, acc, out[n]) for n in range(x.shape[0])])


def _int8_parts(x_shape, w_shape, out_shape, groups, padding, stride, dilation) -> list[tuple]:
    """Per-sample scratch: with one input channel per output channel, the padded plane split
    by stride phase (int16) and its sums at the phase width (int32; four output channels' at
    other strides when each input channel feeds a multiple of 4: ``strided_depthwise``); for a
    pointwise convolution four planes of int32 sums (four output channels at a time); else the
    padded channels-last input less its zero point (int16) and one group's window rows (int16)."""
    if w_shape[1] == 1:
        phases = _phases_shape(w_shape, out_shape, stride, dilation)
        group = 4 if tuple(stride) != (1, 1) and (w_shape[0] // x_shape[1]) % 4 == 0 else 1
        return [(phases, np.int16), ((group * out_shape[2] * phases[2],), np.int32)]
    if _pointwise(w_shape, stride, padding, groups):
        return [((4 * prod(x_shape[2:]),), np.int32)]
    return [(shape, np.int16) for shape in _channels_last_parts(x_shape, w_shape, out_shape,
                                                                padding)]


def _int8_scratch(shapes, out_shape, *, groups, padding, stride, dilation, **_) -> int:
    from edgekit.runtime.int8 import scratch_bytes

    return scratch_bytes(*_int8_parts(shapes[0], shapes[1], out_shape, groups, padding, stride,
                                      dilation))


@conv2d.implements("int8", scratch=_int8_scratch)
def _conv2d_int8(ins, out, *, stride, padding, dilation, groups, activation, quant, scratch):
    """Per sample: padded planes when there is one input channel per output channel, one
    product of the planes for a pointwise convolution, else the padded channels-last copy then,
    per group, window rows and GEMM."""
    from edgekit.numerics.params import conv_params
    from edgekit.runtime.int8 import carve
    from edgekit.runtime.kernels import int8_conv, int8_gemm
    from edgekit.runtime.registry import sequence

    x, w = ins[0], ins[1]
    p = conv_params(quant, w, ins[2] if len(ins) > 2 else None, activation)
    padded, *work = carve(scratch, *_int8_parts(x.shape, w.shape, out.shape, groups, padding,
                                                stride, dilation))
    geometry = (tuple(stride), tuple(dilation))
    if w.shape[1] == 1:
        return _depthwise_int8(x, w[:, 0].astype(np.int32), ins[2], p, padding, geometry,
                               padded, work[0], out)
    if _pointwise(w.shape, stride, padding, groups):  # the input zero point in the bias
        weights, folded = w.reshape(w.shape[0], w.shape[1]), p.folded.astype(np.int32)
        return sequence([(int8_conv.pointwise, x[n].reshape(x.shape[1], -1), weights, folded,
                          p.mult, p.shift, p.out_zp, p.lo, p.hi, padded,
                          out[n].reshape(out.shape[1], -1)) for n in range(x.shape[0])])
    per_group, rows, channels = w.shape[1], work[0], w.shape[0]
    weights = np.ascontiguousarray(
        w.reshape(groups, -1, *w.shape[1:]).transpose(0, 1, 3, 4, 2), np.int16
    ).reshape(groups, channels // groups, -1)
    biases, ms, shifts = (v.reshape(groups, -1) for v in (ins[2], p.mult, p.shift))
    calls: list[tuple] = []
    for n in range(x.shape[0]):
        outs = out[n].reshape(groups, -1, rows.shape[0])
        calls.append((int8_conv.pad_channels_last, x[n], p.in_zp, padding[0], padding[1],
                      padded))
        for g in range(groups):
            calls.append((int8_conv.window_rows, padded, tuple(w.shape[2:]), *geometry,
                          g * per_group, per_group, out.shape[3], rows))
            calls.append((int8_gemm.gemm_requant, weights[g], rows, biases[g], True, ms[g],
                          shifts[g], p.out_zp, p.lo, p.hi, outs[g]))
    return sequence(calls)


def _depthwise_int8(x, taps, bias, p, padding, geometry, phases, acc, out):
    """One call per sample on padded planes: ``int8_conv.depthwise_planes`` at stride 1 (one
    phase, the plane itself), else ``strided_depthwise``."""
    from edgekit.runtime.kernels import int8_conv
    from edgekit.runtime.registry import sequence

    if geometry[0] == (1, 1):
        kernel, geometry, plane = int8_conv.depthwise_planes, geometry[1:], phases.reshape(-1)
    else:
        kernel, plane = int8_conv.strided_depthwise, phases
    return sequence([(kernel, x[n], p.in_zp, padding[0], padding[1], taps, bias, *geometry,
                      p.mult, p.shift, p.out_zp, p.lo, p.hi, plane, acc, out[n])
                     for n in range(x.shape[0])])


def _as_2d(stride, padding, dilation) -> dict:
    """conv1d's geometry as the conv2d of height 1 it runs as."""
    return dict(stride=[1, *stride], padding=[0, padding[0], 0, padding[1]],
                dilation=[1, *dilation])


def _height_one(prepare):
    """conv1d's prepare function from conv2d's on the same backend."""
    def run(ins, out, *, stride, padding, dilation, **attrs):
        as_2d = [a.reshape(*a.shape[:2], 1, a.shape[2]) for a in (ins[0], ins[1], out)]
        return prepare([as_2d[0], as_2d[1], *ins[2:]], as_2d[2],
                       **_as_2d(stride, padding, dilation), **attrs)

    return run


def _height_one_scratch(scratch):
    def nbytes(shapes, out_shape, *, stride, padding, dilation, **attrs) -> int:
        as_2d = [(*s[:2], 1, s[2]) for s in (*shapes[:2], out_shape)]
        return scratch(as_2d[:2], as_2d[2], **_as_2d(stride, padding, dilation), **attrs)

    return nbytes


conv1d.implements("float32", scratch=_height_one_scratch(_float32_scratch))(
    _height_one(_conv2d_float32))
conv1d.implements("int8", scratch=_height_one_scratch(_int8_scratch))(_height_one(_conv2d_int8))


# --- importers ----------------------------------------------------------------------------------

def _emit(c, x, w, bias, stride, pads, dilation, groups):
    """conv1d/conv2d from a constant weight, on either importer's call ``c``; ``pads`` is
    [begins..., ends...] per spatial dim (for 2-D exactly the Graph's [top, left, bottom,
    right])."""
    from edgekit.converters.from_torch import Unsupported

    nd = w.ndim - 2
    if nd not in (1, 2):
        raise Unsupported(f"conv{nd}d")
    inputs = [x, c.param(w, "weight")] + ([] if bias is None else [c.param(bias, "bias")])
    attrs = {"stride": [int(v) for v in stride], "padding": [int(v) for v in pads],
             "dilation": [int(v) for v in dilation], "groups": int(groups)}
    return c.emit(f"conv{nd}d", inputs, attrs)


def _torch(c, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """aten.conv1d/conv2d (.default, and .padding with 'same'/'valid'); core ATen's
    aten.convolution comes here by its weight's rank."""
    from edgekit.converters.from_torch import ints, same_pads

    w = c.const(weight, "convolution")
    nd = w.ndim - 2
    stride, dilation = ints(stride, nd), ints(dilation, nd)
    if padding == "same":
        pads = same_pads(c.b.shape(x.name)[2:], w.shape[2:], stride, dilation)
    elif padding == "valid":
        pads = [0] * 2 * nd
    else:
        pads = ints(padding, nd) * 2
    return _emit(c, x, w, c.const(bias, "convolution"), stride, pads, dilation, groups)


def _onnx_import(n, x, w, bias=None):
    """Conv of either rank (the weight's says which op it is)."""
    w = n.const(w, "Conv with a non-constant weight")
    bias = None if bias is None else n.const(bias, "Conv with a non-constant bias")
    nd = w.ndim - 2
    stride, dil = n.get("strides", [1] * nd), n.get("dilations", [1] * nd)
    return _emit(n, x, w, bias, stride, n.pads(n.shape(x)[2:], w.shape[2:], stride, dil), dil,
                 n.get("group", 1))


conv2d.implements("torch", names=("conv2d",))(_torch)
conv1d.implements("torch", names=("conv1d",))(_torch)
# ONNX has one Conv for every rank: both ops register the one lowering, which emits the op of
# the weight's rank (the importer finds the same function under either).
conv2d.implements("onnx_import", names=("Conv",))(_onnx_import)
conv1d.implements("onnx_import", names=("Conv",))(_onnx_import)


# --- writers ------------------------------------------------------------------------------------

def _tflite_conv(w, node, x, weight, stride, padding, dilation, out):
    """CONV_2D or DEPTHWISE_CONV_2D on NHWC tensors from an OIHW weight."""
    from edgekit.errors import EdgekitError

    groups, cin, cout = node.attrs["groups"], w.shape(x)[3], weight.shape[0]
    if groups == 1:
        code, opts = "CONV_2D", w.options("Conv2D")
        filt = w.weight(node, weight.transpose(0, 2, 3, 1), 0)
    elif groups == cin:
        code, opts = "DEPTHWISE_CONV_2D", w.options("DepthwiseConv2D",
                                                     depthMultiplier=cout // cin)
        filt = w.weight(node, weight.transpose(1, 2, 3, 0), 3)
    else:
        raise EdgekitError(f"grouped convolution (groups={groups} of {cin} channels) has no "
                           "TFLite kernel; split it into groups=1 convolutions and a concat")
    window = [dilation[i] * (weight.shape[2 + i] - 1) + 1 for i in range(2)]
    x, mode = w.window_mode(x, out, window, stride, padding)
    opts.padding = getattr(w.s.Padding, mode)
    opts.strideH, opts.strideW = stride
    opts.dilationHFactor, opts.dilationWFactor = dilation
    opts.fusedActivationFunction = w.fused(node.attrs["activation"])
    w.op(code, [x, filt, w.bias(node, cout)], [out], opts)


@conv2d.implements("tflite", channels_last=True)
def _conv2d_tflite(w, node):
    from edgekit.converters.to_tflite import channels_last

    a = node.attrs
    x = w.value(node.inputs[0], channels_last(4))
    out = w.output(node, channels_last(4))
    _tflite_conv(w, node, x, w.graph.params[node.inputs[1]], a["stride"], a["padding"],
                 a["dilation"], out)


@conv1d.implements("tflite", channels_last=True)
def _conv1d_tflite(w, node):
    """A CONV_2D of height 1 between RESHAPEs of the NLC tensors to N1LC."""
    from edgekit.converters.to_tflite import channels_last

    x = w.value(node.inputs[0], channels_last(3))
    x4 = w.derived(x, [w.shape(x)[0], 1, *w.shape(x)[1:]], "/n1lc")
    w.reshape(x, x4)
    out = w.output(node, channels_last(3))
    out4 = w.derived(out, [w.shape(out)[0], 1, *w.shape(out)[1:]], "/n1lc")
    weight = w.graph.params[node.inputs[1]][:, :, None, :]
    _tflite_conv(w, node, x4, weight, **_as_2d(node.attrs["stride"], node.attrs["padding"],
                                                node.attrs["dilation"]), out=out4)
    w.reshape(out4, out)


def _onnx(e, node, ins):
    """Conv for 1-D and 2-D: the Graph's padding order (begins, then ends) is ONNX's."""
    a = node.attrs
    y = e.add("Conv", ins, strides=a["stride"], pads=a["padding"], dilations=a["dilation"],
              group=a["groups"])
    return e.activate(y, a["activation"])


conv2d.implements("onnx")(_onnx)
conv1d.implements("onnx")(_onnx)


def scratch_bytes(xs, ys, wshape, groups, geometry) -> int:
    """Bytes of the scratch ``col`` that ``ek_conv2d`` needs on every core (the generated model
    is the same for all): a depthwise convolution keeps kh row pointers (8 bytes each, for the
    host-compiled twin) and a ring of the (kh - 1) * dh + 1 input rows a window spans, each
    zero-point padded to the padded width plus 4 bytes of slack, rounded to words; any other
    keeps columns of ``depth`` = cin/groups * kh * kw bytes: four widened to int16 for SMLAD
    and one int8 (9 * depth: Cortex-M4/M7; the M55 keeps four int8 columns, the M3 two). 8 more
    bytes let the firmware align it."""
    (_, sw), _, (dh, dw) = geometry
    kh, kw = wshape[2], wshape[3]
    if groups == xs[1] == ys[1]:
        width = (ys[3] - 1) * sw + (kw - 1) * dw + 1 + 4
        return 8 * kh + ((kh - 1) * dh + 1) * (-(-width // 4) * 4) + 8
    return 9 * prod(wshape[1:]) + 8


def _c(w, i, node):
    """``ek_conv2d``; conv1d as a conv2d of height 1. The firmware sums ``x * w`` over
    im2col columns (``col``, two of them) and adds the folded bias."""
    from edgekit.numerics.params import conv_params

    weight = w.graph.params[node.inputs[1]]
    xs, ys = w.shape(node.inputs[0]), w.shape(node.outputs[0])
    a = node.attrs
    geometry = (a["stride"], a["padding"], a["dilation"])
    if node.op == "conv1d":
        xs, ys, weight = (*xs[:2], 1, xs[2]), (*ys[:2], 1, ys[2]), weight[:, :, None, :]
        geometry = _as_2d(*geometry).values()
    (sh, sw), (pt, pl, _, _), (dh, dw) = geometry
    p = conv_params(w.quant(node), weight, w.graph.params.get(node.inputs[2])
                    if len(node.inputs) > 2 else None, a["activation"])
    folded = p.folded_int32(f"node {node.name or node.op}")
    w.col_bytes = max(w.col_bytes, scratch_bytes(xs, ys, weight.shape, a["groups"],
                                                 geometry))
    fields = dict(cin=xs[1], h=xs[2], w=xs[3], cout=ys[1], oh=ys[2], ow=ys[3],
                  kh=weight.shape[2], kw=weight.shape[3], sh=sh, sw=sw, pt=pt, pl=pl, dh=dh,
                  dw=dw, groups=a["groups"], in_zp=p.in_zp, out_zp=p.out_zp, lo=p.lo, hi=p.hi,
                  weight=w.array("int8_t", weight), bias=w.array("int32_t", folded),
                  mult=w.array("int32_t", p.mult), shift=w.array("int32_t", p.shift))
    return (f"ek_conv2d({w.struct('ek_conv_t', i, fields)}, col, {w.at(node.inputs[0])}, "
            f"{w.at(node.outputs[0])});")


conv2d.implements("c")(_c)
conv1d.implements("c")(_c)


# --- other consumers ----------------------------------------------------------------------------

def _gpu(nd: int):
    def run(x, w, b=None, *, stride, padding, dilation, groups, activation):
        import torch.nn.functional as F

        from edgekit.targets.gpu import activate, pad

        conv = F.conv2d if nd == 2 else F.conv1d
        return activate(conv(pad(x, padding), w, b, stride, 0, dilation, groups), activation)

    return run


conv2d.implements("gpu")(_gpu(2))
conv1d.implements("gpu")(_gpu(1))


@conv2d.implements("learn")
def _conv2d_learn(blocks, graph, node, where):
    from edgekit.learn.blocks import add_dense

    add_dense(blocks, graph, node, where)


conv1d.unsupported("learn", "edgekit.learn trains conv2d and linear layers: its im2row "
                   "kernels and blocks are 2-D (write the layer as a conv2d of height 1)")


# --- spiking backends ---------------------------------------------------------------------------
# Registered below by the spiking migration (event-driven and integer spiking kernels, spiking
# quantizer, unrolled ONNX and firmware writers): conv2d runs on them; conv1d declares why not.
from edgekit.ops.spiking import no_spiking_form, same_every_step, synapse  # noqa: E402


def _event_conv2d(ins, out, *, stride, padding, dilation, groups, activation, scratch):
    """Fed by spikes: each non-zero input element adds its weights to the outputs it reaches
    (``tap_targets`` tables), each output starting from the bias; SOPs counted."""
    from edgekit.errors import EdgekitError
    from edgekit.runtime.kernels import spiking
    from edgekit.runtime.spiking import EventStep

    x, w = ins[0], ins[1]
    if activation != "none":
        raise EdgekitError("an event-driven convolution takes no fused activation")
    bias = ins[2] if len(ins) > 2 else np.zeros(w.shape[0], out.dtype)
    rows, cols = (spiking.tap_targets(size, taps, *geometry) for size, taps, *geometry in
                  zip(x.shape[2:], w.shape[2:], stride, padding[:2], dilation, out.shape[2:]))
    return EventStep(spiking.event_conv2d, x, np.ascontiguousarray(w.transpose(1, 2, 3, 0)),
                     bias, rows, cols,
                     scratch.view(out.dtype).reshape(*out.shape[2:], out.shape[1]), out)


def _event_conv2d_scratch(in_shapes, out_shape, **attrs) -> int:
    """One sample's sums, channels last (``event_conv2d``'s ``acc``; float32 or int32)."""
    return 4 * prod(out_shape[1:])


def _conv2d_onnx_spiking(e, step, node):
    """Float Conv on the integers, cast to int32, plus the int32 bias: exact while no partial
    sum reaches 2^24, proved here from the weights and the input's integer bound."""
    a, params, x = node.attrs, e.graph.params, node.inputs[0]
    weight = params[node.inputs[1]].astype(np.int64)
    e.exact(node, int(np.abs(weight).reshape(weight.shape[0], -1).sum(axis=1).max())
            * e.bound(x), "its float32 Conv")
    w = e.once(f"{node.inputs[1]}/f", lambda: params[node.inputs[1]].astype(np.float32))
    b = e.once(f"{node.inputs[2]}/c11", lambda: params[node.inputs[2]].reshape(-1, 1, 1))
    y = e.add("Conv", [e.centred(node, step.inputs[0], "FLOAT"), w], strides=a["stride"],
              pads=a["padding"], dilations=a["dilation"], group=a["groups"])
    e.add("Add", [e.cast(y, "INT32"), b])


def _conv2d_c_spiking(w, i, node):
    """``ek_event_conv2d``, on the runtime's tap tables: float32 or int8 weights by the
    Graph's kind, the input's dtype picking the kernel."""
    from edgekit.runtime.kernels.spiking import tap_targets

    w.no_activation(node)
    a, weight = node.attrs, w.graph.params[node.inputs[1]]
    xs, ys = w.shape(node.inputs[0]), w.shape(node.outputs[0])
    fields = dict(cin=xs[1], h=xs[2], w=xs[3], cout=ys[1], oh=ys[2], ow=ys[3],
                  kh=weight.shape[2], kw=weight.shape[3], sh=a["stride"][0], sw=a["stride"][1],
                  pt=a["padding"][0], pl=a["padding"][1], dh=a["dilation"][0],
                  dw=a["dilation"][1], groups=a["groups"],
                  weight=w.weights(f"w{i}", weight.transpose(1, 2, 3, 0)),
                  bias=w.bias(i, node, weight.shape[0]))
    for axis, table in (("rows", 0), ("cols", 1)):
        fields[axis] = w.const(f"{axis}{i}", tap_targets(
            xs[2 + table], weight.shape[2 + table], a["stride"][table], a["padding"][table],
            a["dilation"][table], ys[2 + table]), "int16_t")
    struct = w.struct("ek_conv_s8_t" if w.int8 else "ek_conv_f32_t", i, fields)
    suffix, x = w.event_input(i, node)
    return f"ek_event_conv2d_{suffix}({struct}, {x}, {w.at(node.outputs[0])})"


synapse(conv2d, _event_conv2d, _event_conv2d_scratch)
conv2d.implements("onnx_spiking")(_conv2d_onnx_spiking)
conv2d.implements("c_spiking")(_conv2d_c_spiking)
same_every_step(conv1d)
no_spiking_form(conv1d, "spiking Graphs take 2-D synapses: conv1d runs densely, only in float32 "
                        "spiking Graphs on the runtime and in ONNX",
                ("spiking_int8", "quant_spiking", "onnx_spiking", "c_spiking"))
