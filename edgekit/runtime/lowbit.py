"""The runtime's kernels for conv1d, conv2d and linear layers whose weight is stored packed in
a low-bit format (int4, ternary, FP8, float16, with REx orders: ``numerics.formats``).

The packed storage is what the arena's steps read: ``kernels.lowbit.gemm_packed`` unpacks one
output channel's row at a time, at run time, into a buffer of one row (scratch), never the
whole weight at load. Activations are float32 throughout (the schemes are weight formats:
``quant.lowbit``). Convolutions take the float32 path's padded channels-last copy and window
rows (``ops.conv``), so the rows are ordered (ky, kx, channel) and each unpacked weight is put
where they expect it (``_order``).
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


def kernel_for(graph: Graph, node: Node) -> Kernel | None:
    """The packed-weight kernel of ``node``, or None when its weight is not low-bit."""
    if weight_format(graph, node) is None:
        return None
    if node.op not in OPS:
        raise EdgekitError(f"the edgekit runtime runs low-bit weights in {', '.join(OPS)} only, "
                           f"not in {node.op} ({node.name!r})")
    info = graph.tensors[node.inputs[1]]
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
    if op == "linear":
        x = ins[0]
        return sequence([(gemm_packed, codes, table, per, scales, np.arange(width), x.reshape(
            -1, x.shape[-1]), bias, False, *bounds, row, out.reshape(-1, out.shape[-1]))])
    return _conv(_weight_2d(info), codes, table, per, scales, bias, bounds, row, rest,
                 _as_2d_view(ins[0]), _as_2d_view(out), **_geometry(op, info, attrs))


def _as_2d_view(a: np.ndarray) -> np.ndarray:
    return a.reshape(_as_2d(a.shape))


def _order(per_group: int, kh: int, kw: int) -> np.ndarray:
    """Where weight j of a row (torch order: channel, ky, kx) sits in a window row (ky, kx,
    channel)."""
    return np.arange(per_group * kh * kw).reshape(kh, kw, per_group).transpose(2, 0, 1).ravel()


def _conv(info, codes, table, per, scales, bias, bounds, row, rest, x, out, *, stride,
          padding, dilation, groups) -> Step:
    from edgekit.runtime.kernels import int8_conv
    from edgekit.runtime.kernels.lowbit import gemm_packed

    padded_shape, rows_shape = _conv_parts(x.shape, info, out.shape, padding)
    padded, rows = np.split(rest, [prod(padded_shape)])
    padded, rows = padded.reshape(padded_shape), rows.reshape(rows_shape)
    channels, per_group, kh, kw = info.shape
    per_out = channels // groups
    order, calls = _order(per_group, kh, kw), []
    for n in range(x.shape[0]):
        outs = out[n].reshape(groups, -1, rows.shape[0])
        calls.append((int8_conv.pad_channels_last, x[n], 0, padding[0], padding[1], padded))
        for g in range(groups):
            part = slice(g * per_out, (g + 1) * per_out)
            calls += [(int8_conv.window_rows, padded, (kh, kw), tuple(stride), tuple(dilation),
                       g * per_group, per_group, out.shape[3], rows),
                      (gemm_packed, codes[:, part], table, per, scales[:, part], order, rows,
                       bias[part], True, *bounds, row, outs[g])]
    return sequence(calls)
