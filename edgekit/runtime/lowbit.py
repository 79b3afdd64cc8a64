"""The runtime's kernels for conv1d, conv2d and linear layers whose weight is stored packed in
a low-bit format (int4, ternary, FP8, float16, with REx orders: ``numerics.formats``).

The packed storage is what the arena's steps read: ``kernels.lowbit.gemm_packed`` unpacks one
output channel's row at a time, at run time, into a buffer of one row (scratch), never the
whole weight at load. Activations are float32 throughout (the schemes are weight formats:
``quant.lowbit``). Convolutions take the float32 path's padded channels-last copy and window
rows (``ops.conv``), so the rows are ordered (ky, kx, channel) and each unpacked weight is put
where they expect it (``_order``).

int8 layers take ``kernels.lowbit.gemm_int8_rows`` (``kernel_for`` picks it by the input's
dtype): the ``*_a8`` schemes' int4/ternary rows, and any int8 layer the Graph gives a narrow
accumulator (``quant.accumulators.width``), its int8 weight read as rows of one code per
byte. Each row is summed in torch order, ``(x - zp) * w`` one weight at a time, as the
firmware's ``ek_lowbit.c`` does, so a saturating accumulator clamps the same partial sums
on both.
"""

from __future__ import annotations

from functools import partial
from math import prod

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph, Node, TensorInfo
from edgekit.numerics import formats
from edgekit.runtime.registry import Kernel, Step, sequence

OPS = ("conv1d", "conv2d", "linear")


def weight_format(graph: Graph, node: Node) -> str | None:
    """The low-bit dtype of ``node``'s weight (its input 1), or None."""
    if len(node.inputs) < 2 or node.inputs[1] not in graph.params:
        return None
    dtype = graph.tensors[node.inputs[1]].dtype
    return dtype if formats.weight_dtype(dtype) else None


INT8_FORMATS = ("int4", "ternary")  # the packed formats int8 layers read (the *_a8 schemes)


def kernel_for(graph: Graph, node: Node) -> Kernel | None:
    """The packed-weight kernel of ``node``, or None when its weight is not low-bit and its
    accumulator is not narrow."""
    from edgekit.quant.accumulators import width

    fmt, acc = weight_format(graph, node), width(graph, node)
    if fmt is None and acc is None:
        return None
    if node.op not in OPS:
        raise EdgekitError(f"the edgekit runtime runs low-bit weights in {', '.join(OPS)} only, "
                           f"not in {node.op} ({node.name!r})")
    info = graph.tensors[node.inputs[1]]
    if graph.tensors[node.inputs[0]].dtype == "int8":
        if fmt not in (None, *INT8_FORMATS):
            raise EdgekitError(f"int8 layers read int8, {' or '.join(INT8_FORMATS)} weights, "
                               f"not {fmt} ({node.name!r})")
        return Kernel(partial(_prepare_int8, node.op, info, acc or (32, "wrap")),
                      partial(_scratch_int8, node.op, info), "int8")
    if acc is not None:
        raise EdgekitError(f"narrow accumulators are for int8 layers; {node.name!r} is float32")
    return Kernel(partial(_prepare, node.op, info), partial(_scratch, node.op, info))


def _geometry(op: str, info: TensorInfo, attrs: dict) -> dict:
    """conv1d as the conv2d of height 1 it runs as; conv2d as it is."""
    if op == "conv2d":
        return attrs
    return dict(attrs, stride=[1, *attrs["stride"]], dilation=[1, *attrs["dilation"]],
                padding=[0, attrs["padding"][0], 0, attrs["padding"][1]])


def _conv_parts(x_shape, info: TensorInfo, out_shape, padding) -> list[tuple[int, ...]]:
    from edgekit.ops.conv import _channels_last_parts

    return _channels_last_parts(x_shape, info.shape, out_shape, padding)


def _as_2d(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (*shape[:2], 1, shape[2]) if len(shape) == 3 else tuple(shape)


def _scratch(op: str, info: TensorInfo, shapes, out_shape, **attrs) -> int:
    """One float32 row of weights; a convolution adds the padded channels-last sample and one
    group's window rows."""
    row = 4 * prod(info.shape[1:])
    if op == "linear":
        return row
    a = _geometry(op, info, attrs)
    parts = _conv_parts(_as_2d(shapes[0]), _weight_2d(info), _as_2d(out_shape), a["padding"])
    return row + 4 * sum(prod(p) for p in parts)


def _scratch_int8(op: str, info: TensorInfo, shapes, out_shape, **attrs) -> int:
    """One int32 row of weights; a convolution adds the padded channels-last sample less its
    zero point and one group's window rows (int16, as the int8 convolution's)."""
    from edgekit.runtime.int8 import scratch_bytes

    return scratch_bytes(*_int8_parts(op, info, shapes, out_shape, attrs))


def _int8_parts(op: str, info: TensorInfo, shapes, out_shape, attrs) -> list[tuple]:
    row = [((prod(info.shape[1:]),), np.int32)]
    if op == "linear":
        return row
    a = _geometry(op, info, attrs)
    parts = _conv_parts(_as_2d(shapes[0]), _weight_2d(info), _as_2d(out_shape), a["padding"])
    return row + [(p, np.int16) for p in parts]


def int8_rows(info: TensorInfo, storage: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(codes ``[C, bytes]`` uint8, int32 decode table ``[256, per]``, codes per byte) of an
    int8 layer's weight: the packed storage itself, or the int8 weight's bytes, one a row
    position."""
    if info.dtype == "int8":
        table = np.arange(256).astype(np.uint8).view(np.int8).astype(np.int32)[:, None]
        return storage.reshape(info.shape[0], -1).view(np.uint8), table, 1
    fmt = formats.weight_dtype(info.dtype)[0]
    return storage[0], formats.decode_table(fmt).astype(np.int32), formats.FORMATS[fmt].per_byte


def _prepare_int8(op: str, info: TensorInfo, acc: tuple[int, str], ins, out, *, activation,
                  quant, scratch, **attrs) -> Step:
    from edgekit.numerics.params import conv_params
    from edgekit.runtime.int8 import carve
    from edgekit.runtime.kernels.lowbit import gemm_int8_rows

    codes, table, per = int8_rows(info, ins[1])
    # the folded bias is not used (the rows subtract the zero point): no weight values needed
    p = conv_params(quant, np.zeros((info.shape[0], 1), np.int8),
                    ins[2] if len(ins) > 2 else None, activation, fully_connected=op == "linear")
    row, *work = carve(scratch, *_int8_parts(op, info, [ins[0].shape], out.shape, attrs))
    bits, saturate = acc[0], acc[1] == "saturate"

    def product(part: slice, order: np.ndarray, a: np.ndarray, zp: int) -> tuple:
        return (gemm_int8_rows, codes[part], table, per, order, a, zp, ins[2][part],
                op != "linear", p.mult[part], p.shift[part], p.out_zp, p.lo, p.hi, bits,
                saturate, row)

    if op == "linear":
        x = ins[0]
        return sequence([(*product(slice(None), np.arange(row.shape[0]),
                                   x.reshape(-1, x.shape[-1]), p.in_zp),
                          out.reshape(-1, out.shape[-1]))])
    return _conv(_weight_2d(info), product, work, p.in_zp, _as_2d_view(ins[0]),
                 _as_2d_view(out), **_geometry(op, info, attrs))


def _weight_2d(info: TensorInfo) -> TensorInfo:
    return TensorInfo(_as_2d(info.shape), info.dtype, info.quant)


def _packed(info: TensorInfo, storage: np.ndarray) -> tuple:
    """(codes, decode table, codes per byte, scales [K, C, G] float32) of a packed weight."""
    fmt, _ = formats.weight_dtype(info.dtype)
    codes = storage.view(np.uint16) if fmt == "float16" else storage
    scales = formats.scale_array(info.quant and info.quant.scale, info.dtype, info.shape)
    return codes, formats.decode_table(fmt), formats.FORMATS[fmt].per_byte, scales


def _prepare(op: str, info: TensorInfo, ins, out, *, activation, scratch, **attrs) -> Step:
    from edgekit.ops.util import float_bias
    from edgekit.runtime.kernels.elementwise import ACTIVATION_BOUNDS
    from edgekit.runtime.kernels.lowbit import gemm_packed

    codes, table, per, scales = _packed(info, ins[1])
    bias, bounds = float_bias(ins, info.shape[0]), ACTIVATION_BOUNDS[activation]
    width = prod(info.shape[1:])
    row, rest = np.split(scratch.view(np.float32), [width])

    def product(part: slice, order: np.ndarray, a: np.ndarray, zp: int) -> tuple:
        return (gemm_packed, codes[:, part], table, per, scales[:, part], order, a, bias[part],
                op != "linear", *bounds, row)

    if op == "linear":
        x = ins[0]
        return sequence([(*product(slice(None), np.arange(width), x.reshape(-1, x.shape[-1]),
                                   0), out.reshape(-1, out.shape[-1]))])
    a = _geometry(op, info, attrs)
    padded_shape, rows_shape = _conv_parts(_as_2d(ins[0].shape), _weight_2d(info),
                                           _as_2d(out.shape), a["padding"])
    padded, rows = np.split(rest, [prod(padded_shape)])
    work = (padded.reshape(padded_shape), rows.reshape(rows_shape))
    return _conv(_weight_2d(info), product, work, 0, _as_2d_view(ins[0]), _as_2d_view(out),
                 **a)


def _as_2d_view(a: np.ndarray) -> np.ndarray:
    return a.reshape(_as_2d(a.shape))


def _order(per_group: int, kh: int, kw: int) -> np.ndarray:
    """Where weight j of a row (torch order: channel, ky, kx) sits in a window row (ky, kx,
    channel)."""
    return np.arange(per_group * kh * kw).reshape(kh, kw, per_group).transpose(2, 0, 1).ravel()


def _conv(info, product, work, zp, x, out, *, stride, padding, dilation, groups) -> Step:
    """Per sample: the padded channels-last copy (less the zero point ``zp``), then per group
    its window rows and ``product(channels, order, rows, 0)``: the call that multiplies them
    by those output channels' packed rows, up to its output."""
    from edgekit.runtime.kernels import int8_conv

    padded, rows = work
    channels, per_group, kh, kw = info.shape
    per_out = channels // groups
    order, calls = _order(per_group, kh, kw), []
    for n in range(x.shape[0]):
        outs = out[n].reshape(groups, -1, rows.shape[0])
        calls.append((int8_conv.pad_channels_last, x[n], zp, padding[0], padding[1], padded))
        for g in range(groups):
            calls += [(int8_conv.window_rows, padded, (kh, kw), tuple(stride), tuple(dilation),
                       g * per_group, per_group, out.shape[3], rows),
                      (*product(slice(g * per_out, (g + 1) * per_out), order, rows, 0),
                       outs[g])]
    return sequence(calls)
