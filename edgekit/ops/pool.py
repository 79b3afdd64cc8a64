"""2-D pooling: avgpool2d, maxpool2d and global_avgpool (AdaptiveAvgPool2d(1)), NCHW, with
every backend's implementation.

On int8 the pools keep their input's quantization (the quantizer's ``first_input`` rule): a max
moves values, and TFLite's average rounds the window mean of the int8 values themselves. TFLite
writes them channels-last, as its kernels are.
"""

from __future__ import annotations

import numpy as np

from edgekit.ops import declare
from edgekit.ops.schema import REQUIRED, OpDef, check_window, fail, prod, window_out
from edgekit.ops.util import finish, windows


def _shape(s, a):
    x = s[0]
    if len(x) != 4:
        fail(f"2-D pooling expects NCHW input, got {x}")
    check_window("2-D pooling", a)
    pt, pl, pb, pr = a["padding"]
    kh, kw = a["kernel"]
    if max(pt, pb) * 2 > kh or max(pl, pr) * 2 > kw:
        fail(f"pool padding {a['padding']} must be at most half the kernel {a['kernel']}")
    dh, dw = a.get("dilation", [1, 1])
    return (x[0], x[1], window_out(x[2], kh, a["stride"][0], pt + pb, dh),
            window_out(x[3], kw, a["stride"][1], pl + pr, dw))


def _window_adds(i, o, a) -> int:
    return prod(o) * prod(a["kernel"])  # adds, counted as MACs


def _avg_reference(x, *, kernel, stride, padding, count_include_pad):
    total = windows(x, kernel, stride, padding, [1, 1], 0.0).sum(axis=-1)
    if count_include_pad:
        return finish(total / (kernel[0] * kernel[1]))
    ones = np.ones((1, 1, *x.shape[2:]))
    return finish(total / windows(ones, kernel, stride, padding, [1, 1], 0.0).sum(axis=-1))


avgpool2d = declare(OpDef(
    "avgpool2d", (1, 1),
    {"kernel": REQUIRED, "stride": REQUIRED, "padding": [0, 0, 0, 0], "count_include_pad": True},
    _shape, _window_adds, quant="first_input", reference=_avg_reference,
    doc="mean over each window; padding is [top, left, bottom, right]"))


def _max_reference(x, *, kernel, stride, padding, dilation):
    return finish(windows(x, kernel, stride, padding, dilation, -np.inf).max(axis=-1))


maxpool2d = declare(OpDef(
    "maxpool2d", (1, 1),
    {"kernel": REQUIRED, "stride": REQUIRED, "padding": [0, 0, 0, 0], "dilation": [1, 1]},
    _shape, quant="first_input", reference=_max_reference,
    doc="max over each window; padding is [top, left, bottom, right]"))


def _global_shape(s, a):
    if len(s[0]) != 4:
        fail(f"global_avgpool expects NCHW input, got {s[0]}")
    return (s[0][0], s[0][1], 1, 1)


global_avgpool = declare(OpDef(
    "global_avgpool", (1, 1), {}, _global_shape, lambda i, o, a: prod(i[0]), quant="first_input",
    reference=lambda x: finish(x.astype(np.float64).mean(axis=(2, 3), keepdims=True)),
    doc="mean over H and W keeping them as 1 (AdaptiveAvgPool2d(1))"))


# --- edgekit runtime --------------------------------------------------------------------------

@maxpool2d.implements("float32")
def _max_float32(ins, out, *, kernel, stride, padding, dilation):
    from edgekit.runtime.kernels import pool
    from edgekit.runtime.registry import bind

    return bind(pool.max_pool2d, ins[0], tuple(kernel), tuple(stride), tuple(padding[:2]),
                tuple(dilation), np.float32(-np.inf), out)


@maxpool2d.implements("int8")
def _max_int8(ins, out, *, kernel, stride, padding, dilation, quant):
    from edgekit.runtime.int8 import check_shared
    from edgekit.runtime.kernels import pool
    from edgekit.runtime.registry import bind

    check_shared("maxpool2d", quant)
    return bind(pool.max_pool2d, ins[0], tuple(kernel), tuple(stride), tuple(padding[:2]),
                tuple(dilation), np.int8(-128), out)


@avgpool2d.implements("float32")
def _avg_float32(ins, out, *, kernel, stride, padding, count_include_pad):
    from edgekit.runtime.kernels import pool
    from edgekit.runtime.registry import bind

    return bind(pool.avg_pool2d, ins[0], tuple(kernel), tuple(stride), tuple(padding[:2]),
                count_include_pad, out)


@avgpool2d.implements("int8")
def _avg_int8(ins, out, *, kernel, stride, padding, count_include_pad, quant):
    from edgekit.numerics.params import zero_point
    from edgekit.runtime.int8 import check_shared
    from edgekit.runtime.kernels import int8_pool
    from edgekit.runtime.registry import bind

    check_shared("avgpool2d", quant)
    return bind(int8_pool.avg_pool2d, ins[0], tuple(kernel), tuple(stride), tuple(padding[:2]),
                count_include_pad, zero_point(quant[0]), out)


@global_avgpool.implements("float32")
def _global_float32(ins, out):
    from edgekit.runtime.kernels import pool
    from edgekit.runtime.registry import bind

    x = ins[0]
    return bind(pool.row_mean, x.reshape(x.shape[0] * x.shape[1], -1), out.reshape(-1))


@global_avgpool.implements("int8")
def _global_int8(ins, out, *, quant):
    from edgekit.runtime.int8 import check_shared
    from edgekit.runtime.kernels import int8_pool
    from edgekit.runtime.registry import bind

    check_shared("global_avgpool", quant)
    x = ins[0]
    return bind(int8_pool.global_avg, x.reshape(x.shape[0] * x.shape[1], -1), out.reshape(-1))


# --- importers --------------------------------------------------------------------------------

def _emit_window(c, op, x, kernel, stride, pads, **attrs):
    """avgpool2d/maxpool2d over NCHW from either importer's call; ``pads`` is [top, left,
    bottom, right]."""
    from edgekit.converters.from_torch import Unsupported

    rank = len(c.b.shape(x.name))
    if rank != 4:
        raise Unsupported(f"{op} over {rank - 2}-D input")
    attrs.update(kernel=[int(k) for k in kernel], stride=[int(s) for s in stride],
                 padding=[int(p) for p in pads])
    return c.emit(op, [x], attrs)


def _torch_window(c, op, x, kernel_size, stride, padding, dilation_, ceil_mode, **attrs):
    """The Graph's pools round down; ceil_mode=True is accepted where it gives the same size
    (torch drops a last window that would start in the right padding)."""
    from edgekit.converters.from_torch import Unsupported, ints

    kernel, pad, dil = ints(kernel_size, 2), ints(padding, 2), ints(dilation_, 2)
    stride = ints(stride or kernel, 2)
    for n, k, s, p, d in zip(c.b.shape(x.name)[2:], kernel, stride, pad, dil, strict=True):
        span = n + 2 * p - d * (k - 1) - 1
        if ceil_mode and span >= 0 and span % s and (span // s + 1) * s < n + p:
            raise Unsupported(f"{c.aten}(ceil_mode=True)")
    return _emit_window(c, op, x, kernel, stride, pad * 2, **attrs)


def _height_one(c, x, kind, lower):
    """``lower`` (a 2-D pool's lowering, on either importer's call) on the (N, C, 1, L) view of
    the 1-D input ``x``, its output reshaped back to (N, C, L'): exact, reshapes move nothing."""
    from edgekit.converters.from_torch import Unsupported

    shape = c.b.shape(x.name)
    if len(shape) != 3:
        raise Unsupported(f"{kind} over {len(shape) - 2}-D input")
    y = lower(c.emit("reshape", [x], {"shape": [shape[1], 1, shape[2]]}))
    out = c.b.shape(y.name)
    return c.emit("reshape", [y], {"shape": [out[1], out[3]]})


def _torch_1d(c, x, op, kernel_size, stride, padding, dilation, ceil_mode, **attrs):
    """avg_pool1d/max_pool1d: the 2-D pool of unit height (``_height_one``)."""
    from edgekit.converters.from_torch import ints

    kernel, dil = ints(kernel_size, 1), [1, *ints(dilation, 1)]
    geometry = [1, *kernel], [1, *ints(stride or kernel, 1)], [0, *ints(padding, 1)], dil
    if op == "maxpool2d":
        attrs["dilation"] = dil
    return _height_one(c, x, c.aten, lambda v: _torch_window(c, op, v, *geometry, ceil_mode,
                                                             **attrs))


@avgpool2d.implements("torch", names=("avg_pool2d", "avg_pool1d", "adaptive_avg_pool1d"))
def _avg_torch(c, x, *args, **kwargs):
    """avg_pool2d; avg_pool1d and adaptive_avg_pool1d on the height-1 view."""
    from edgekit.converters.from_torch import ints

    if c.aten == "adaptive_avg_pool1d":
        size = [1, *ints(kwargs.get("output_size", args[0] if args else None), 1)]
        return _height_one(c, x, c.aten, lambda v: _global_torch(c, v, size))
    return (_avg_pool1d if c.aten == "avg_pool1d" else _avg_pool2d)(c, x, *args, **kwargs)


def _avg_pool1d(c, x, kernel_size, stride=(), padding=0, ceil_mode=False,
                count_include_pad=True):
    return _torch_1d(c, x, "avgpool2d", kernel_size, stride, padding, 1, ceil_mode,
                     count_include_pad=bool(count_include_pad))


def _avg_pool2d(c, x, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None):
    from edgekit.converters.from_torch import Unsupported

    if divisor_override is not None:
        raise Unsupported("avg_pool2d(divisor_override)")
    return _torch_window(c, "avgpool2d", x, kernel_size, stride, padding, 1, ceil_mode,
                         count_include_pad=bool(count_include_pad))


@maxpool2d.implements("torch", names=("max_pool2d", "max_pool2d_with_indices", "max_pool1d",
                                       "max_pool1d_with_indices"))
def _max_torch(c, x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    """max_pool*_with_indices also returns the indices, which nothing may read; max_pool1d is
    the 2-D pool of unit height."""
    from edgekit.converters.from_torch import ints

    if c.aten.startswith("max_pool1d"):
        y = _torch_1d(c, x, "maxpool2d", kernel_size, stride, padding, dilation, ceil_mode)
    else:
        y = _torch_window(c, "maxpool2d", x, kernel_size, stride, padding, dilation, ceil_mode,
                          dilation=ints(dilation, 2))
    return (y, None) if c.aten.endswith("_with_indices") else y


@global_avgpool.implements("torch", names=("adaptive_avg_pool2d", "_adaptive_avg_pool2d"))
def _global_torch(c, x, output_size):
    """Output 1x1 is a global average pool; an output that divides the input evenly is a
    plain average pool; anything else has uneven windows the Graph cannot express.
    (x.mean((2, 3)) is one too: reduce_mean's lowering gives it, ``reduce.emit_reduction``.)"""
    from edgekit.converters.from_torch import Unsupported, ints

    size = c.b.shape(x.name)[2:]
    out = ints(output_size, 2)
    if out == [1, 1]:
        return c.emit("global_avgpool", [x])
    if len(size) != 2 or any(n % o for n, o in zip(size, out, strict=True)):
        raise Unsupported(f"adaptive_avg_pool2d to {out} from {list(size)}")
    kernel = [n // o for n, o in zip(size, out, strict=True)]
    return _emit_window(c, "avgpool2d", x, kernel, kernel, [0] * 4)


def _onnx_window(n, x):
    """(kernel, stride, pads, dilations) of an ONNX AveragePool/MaxPool with one output."""
    from edgekit.converters.from_torch import Unsupported

    kind = n.op
    if n.n_out > 1:
        raise Unsupported(f"{kind} with an indices output")
    kernel, rank = n.get("kernel_shape"), len(n.shape(x))
    if not isinstance(kernel, list):
        fail(f"{kind} needs its kernel_shape attribute")
    if len(kernel) != 2 or rank != 4:
        raise Unsupported(f"{kind} over {rank - 2}-D input")
    stride, dil = n.get("strides", [1, 1]), n.get("dilations", [1, 1])
    pads = n.pads(n.shape(x)[2:], kernel, stride, dil)
    if not len(stride) == len(dil) == 2 or len(pads) != 4:
        fail(f"{kind}: strides {stride}, dilations {dil} and pads {pads} do not fit a 2-D kernel")
    spans = [size + p0 + p1 - (k - 1) * d - 1 for size, k, d, p0, p1
             in zip(n.shape(x)[2:], kernel, dil, pads[:2], pads[2:], strict=True)]
    if n.get("ceil_mode", 0) and any(span % s for span, s in zip(spans, stride, strict=True)):
        raise Unsupported(f"{kind}(ceil_mode=1)")
    return kernel, stride, pads, dil


def _onnx_1d(n, x, lower):
    """An ONNX pool over (N, C, L) as the 2-D one on its (N, C, 1, L) view (``_height_one``):
    its attributes given a unit height (kernel, stride and dilation 1, no padding)."""
    import dataclasses

    attrs = dict(n.attrs)
    for key in ("kernel_shape", "strides", "dilations"):
        if isinstance(attrs.get(key), list) and len(attrs[key]) == 1:
            attrs[key] = [1, *attrs[key]]
    if isinstance(attrs.get("pads"), list) and len(attrs["pads"]) == 2:
        attrs["pads"] = [0, attrs["pads"][0], 0, attrs["pads"][1]]
    return _height_one(n, x, n.op, lambda v: lower(dataclasses.replace(n, attrs=attrs), v))


@avgpool2d.implements("onnx_import", names=("AveragePool",))
def _avg_onnx_import(n, x):
    from edgekit.converters.from_torch import Unsupported

    if len(n.shape(x)) == 3:
        return _onnx_1d(n, x, _avg_onnx_import)
    kernel, stride, pads, dil = _onnx_window(n, x)
    if dil != [1, 1]:
        raise Unsupported("AveragePool with dilations")
    return _emit_window(n, "avgpool2d", x, kernel, stride, pads,
                        count_include_pad=bool(n.get("count_include_pad", 0)))


@maxpool2d.implements("onnx_import", names=("MaxPool",))
def _max_onnx_import(n, x):
    if len(n.shape(x)) == 3:
        return _onnx_1d(n, x, _max_onnx_import)
    kernel, stride, pads, dil = _onnx_window(n, x)
    return _emit_window(n, "maxpool2d", x, kernel, stride, pads, dilation=dil)


@global_avgpool.implements("onnx_import", names=("GlobalAveragePool",))
def _global_onnx_import(n, x):
    from edgekit.converters.from_torch import Unsupported

    if len(n.shape(x)) != 4:
        raise Unsupported(f"GlobalAveragePool over {len(n.shape(x)) - 2}-D input")
    return n.emit("global_avgpool", [x])


# --- writers ----------------------------------------------------------------------------------

def _tflite_window(w, node, code, kernel, stride, padding, fill=None):
    """A TFLite pool on NHWC tensors; padding SAME cannot express goes through an explicit
    PAD (PADV2 with ``fill``)."""
    from edgekit.converters.to_tflite import channels_last

    x = w.value(node.inputs[0], channels_last(4))
    out = w.output(node, channels_last(4))
    x, mode = w.window_mode(x, out, kernel, stride, padding, fill)
    opts = w.options("Pool2D", padding=getattr(w.s.Padding, mode), strideH=stride[0],
                     strideW=stride[1], filterHeight=kernel[0], filterWidth=kernel[1])
    w.op(code, [x], [out], opts)


@maxpool2d.implements("tflite", channels_last=True)
def _max_tflite(w, node):
    """MAX_POOL_2D; padding SAME cannot express goes through PADV2 with the lowest value."""
    from edgekit.errors import EdgekitError

    a = node.attrs
    if a["dilation"] != [1, 1]:
        raise EdgekitError(f"TFLite's MAX_POOL_2D has no dilation (got {a['dilation']})")
    lowest = -128 if w.int8 else float(np.finfo(np.float32).min)
    _tflite_window(w, node, "MAX_POOL_2D", a["kernel"], a["stride"], a["padding"], lowest)


@avgpool2d.implements("tflite", channels_last=True)
def _avg_tflite(w, node):
    """AVERAGE_POOL_2D: TFLite divides by the taps inside the input, so padding is writable
    only as SAME with count_include_pad=False."""
    from edgekit.converters.to_tflite import padding_mode
    from edgekit.errors import EdgekitError

    a = node.attrs
    if any(a["padding"]):
        shape = w.graph.tensors[node.inputs[0]].shape[2:]
        out = w.graph.tensors[node.outputs[0]].shape[2:]
        if a["count_include_pad"]:
            raise EdgekitError("avgpool2d with padding and count_include_pad=True cannot be "
                               "written: TFLite never counts padded taps")
        if padding_mode(list(shape), list(out), a["kernel"], a["stride"], a["padding"]) is None:
            raise EdgekitError(f"avgpool2d padding {a['padding']} is not TFLite's SAME padding")
    _tflite_window(w, node, "AVERAGE_POOL_2D", a["kernel"], a["stride"], a["padding"])


@global_avgpool.implements("tflite", channels_last=True)
def _global_tflite(w, node):
    h, wd = w.graph.tensors[node.inputs[0]].shape[2:]
    _tflite_window(w, node, "AVERAGE_POOL_2D", [h, wd], [1, 1], [0, 0, 0, 0])


@maxpool2d.implements("onnx")
def _max_onnx(e, node, ins):
    a = node.attrs
    return e.add("MaxPool", ins, kernel_shape=a["kernel"], strides=a["stride"],
                  pads=a["padding"], dilations=a["dilation"])


@avgpool2d.implements("onnx")
def _avg_onnx(e, node, ins):
    a = node.attrs
    return e.add("AveragePool", ins, kernel_shape=a["kernel"], strides=a["stride"],
                 pads=a["padding"], count_include_pad=int(a["count_include_pad"]))


@global_avgpool.implements("onnx")
def _global_onnx(e, node, ins):
    return e.add("GlobalAveragePool", ins)


def _c_window(w, i, node, fn, kernel, stride, padding, dilation=(1, 1), include=False):
    """One ``ek_pool_t`` and the call of firmware pool ``fn``; the zero point is the input's
    (pools share it with the output)."""
    from edgekit.numerics.params import zero_point

    xs, ys = w.shape(node.inputs[0]), w.shape(node.outputs[0])
    fields = dict(c=xs[1], h=xs[2], w=xs[3], oh=ys[2], ow=ys[3], kh=kernel[0], kw=kernel[1],
                  sh=stride[0], sw=stride[1], pt=padding[0], pl=padding[1], dh=dilation[0],
                  dw=dilation[1], count_include_pad=int(include),
                  zp=zero_point(w.quant(node)[0]))
    return f"{fn}({w.struct('ek_pool_t', i, fields)}, {w.at(node.inputs[0])}, " \
           f"{w.at(node.outputs[0])});"


@maxpool2d.implements("c")
def _max_c(w, i, node):
    a = node.attrs
    return _c_window(w, i, node, "ek_maxpool2d", a["kernel"], a["stride"], a["padding"],
                     a["dilation"])


@avgpool2d.implements("c")
def _avg_c(w, i, node):
    a = node.attrs
    return _c_window(w, i, node, "ek_avgpool2d", a["kernel"], a["stride"], a["padding"],
                     include=a["count_include_pad"])


@global_avgpool.implements("c")
def _global_c(w, i, node):
    return _c_window(w, i, node, "ek_avgpool2d", w.shape(node.inputs[0])[2:], (1, 1), (0, 0))


# --- gpu target (torch) and on-device learning ------------------------------------------------

@maxpool2d.implements("gpu")
def _max_gpu(x, *, kernel, stride, padding, dilation):
    import torch.nn.functional as F

    from edgekit.targets.gpu import pad

    return F.max_pool2d(pad(x, padding, float("-inf")), kernel, stride, 0, dilation)


@avgpool2d.implements("gpu")
def _avg_gpu(x, *, kernel, stride, padding, count_include_pad):
    """Window sums over the zero-padded input, divided by all taps or by the taps inside."""
    import torch
    import torch.nn.functional as F

    from edgekit.targets.gpu import pad

    taps = kernel[0] * kernel[1]
    sums = F.avg_pool2d(pad(x, padding), kernel, stride) * taps
    if count_include_pad:
        return sums / taps
    ones = pad(torch.ones_like(x[:1, :1]), padding)
    return sums / (F.avg_pool2d(ones, kernel, stride) * taps)


@global_avgpool.implements("gpu")
def _global_gpu(x):
    return x.mean(dim=(2, 3), keepdim=True)


def _learn(op: OpDef) -> None:
    @op.implements("learn")
    def _(blocks, graph, node, where):
        """The pool joins the last conv block (one per block, after its activation)."""
        from edgekit.learn.blocks import add_pool

        add_pool(blocks, node.op, node.attrs, where)


for _op in (maxpool2d, avgpool2d, global_avgpool):
    _learn(_op)


# --- spiking backends -------------------------------------------------------------------------
# spiking, spiking_int8, onnx_spiking, c_spiking and quant_spiking of the pools are registered
# here by the spiking engines' migration.

from edgekit.ops.spiking import no_spiking_form, same_every_step  # noqa: E402

for _op, _integer in ((avgpool2d, "sum_pool2d"), (global_avgpool, "global_sum")):
    same_every_step(_op)
    no_spiking_form(_op, f"int8 spiking Graphs pool with {_integer} (edgekit.quantize makes it "
                         f"of {_op.name}); float32 ones write {_op.name} as float32 Graphs do",
                    ("spiking_int8", "onnx_spiking"))
no_spiking_form(maxpool2d, "converters.snn.to_snn turns max pooling into average pooling: a max "
                           "over spike trains is not the max of the rates")


def _window_sum(g, node, window: int) -> None:
    """An average pool of spikes as its integer sum: int32, the input's scale over the window
    (exact: nothing is divided in the network)."""
    from edgekit.errors import EdgekitError
    from edgekit.graph import QuantParams
    from edgekit.quant.spiking import per_tensor, set_tensor

    quant = per_tensor(g, node.inputs[0], node.op)
    if quant.zero_point[0] != 0:
        raise EdgekitError("pooling the raw input has no int8 spiking form; run in float32")
    set_tensor(g, node.outputs[0], "int32",
               QuantParams([float(np.float32(quant.scale[0] / window))], [0]))


@avgpool2d.implements("quant_spiking")
def _avg_quant_spiking(g, node, float_params, per_channel, partners):
    """Becomes ``sum_pool2d``; zero padding adds nothing to a sum, so only a divisor that leaves
    the padding out has no integer form."""
    from edgekit.errors import EdgekitError

    a = node.attrs
    if any(a["padding"]) and not a["count_include_pad"]:
        raise EdgekitError("a padded average pool that leaves the padding out of its divisor "
                           "is no integer sum; pool with count_include_pad or run in float32")
    _window_sum(g, node, prod(a["kernel"]))
    node.op, node.attrs = "sum_pool2d", {k: a[k] for k in ("kernel", "stride", "padding")}


@global_avgpool.implements("quant_spiking")
def _global_quant_spiking(g, node, float_params, per_channel, partners):
    """Becomes ``global_sum``."""
    _window_sum(g, node, prod(g.tensors[node.inputs[0]].shape[2:]))
    node.op = "global_sum"


@avgpool2d.implements("c_spiking")
def _avg_c_spiking(w, i, node):
    """A float32 spiking Graph's average pool (an int8 one holds ``sum_pool2d``)."""
    struct = w.struct("ek_pool_t", i, w.pool_fields(
        node, count_include_pad=int(node.attrs["count_include_pad"])))
    return f"ek_avgpool2d_f32({struct}, {w.at(node.inputs[0])}, {w.at(node.outputs[0])})"


@global_avgpool.implements("c_spiking")
def _global_c_spiking(w, i, node):
    x = node.inputs[0]
    channels = w.shape(x)[1]
    return (f"ek_global_avgpool_f32({channels}, {w.size(x) // channels}, {w.at(x)}, "
            f"{w.at(node.outputs[0])})")
