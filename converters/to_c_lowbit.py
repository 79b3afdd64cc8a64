"""``to_c``'s calls for int8 layers the firmware runs on weight rows (``ek_lowbit.c``): the
``*_a8`` schemes' packed int4/ternary weights (``quant.lowbit``), written packed as the Graph
stores them, and int8 layers the Graph gives a narrow accumulator (``quant.accumulators``).

Both kernels unpack one output channel's row into the firmware's column scratch and sum
``(x - zp) * w`` in torch order into an accumulator of the layer's width, then add the Graph's
int32 bias and requantize with the same ``conv_params`` multipliers as every int8 backend: the
twin of the runtime's ``gemm_int8_rows``, bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

from edgekit.graph import Node
from edgekit.quant.accumulators import LAYERS, width

FORMAT_CODES = {"int8": 0, "int4": 1, "ternary": 2}  # EK_ROWS_* in ek_lowbit.h


def call(w, i: int, node: Node) -> str | None:
    """Step ``i``'s call when ``node`` runs on weight rows, else None (``to_c``'s own)."""
    from edgekit.numerics.params import conv_params

    graph = w.graph
    if node.op not in LAYERS:
        return None
    info, acc = graph.tensors[node.inputs[1]], width(graph, node)
    if info.dtype == "int8" and acc is None:
        return None
    bits, mode = acc or (32, "wrap")
    storage = graph.params[node.inputs[1]]
    codes = (storage.reshape(info.shape[0], -1).view(np.uint8) if info.dtype == "int8"
             else storage[0])
    row = math.prod(info.shape[1:])
    w.col_bytes = max(w.col_bytes, row)
    bias = graph.params[node.inputs[2]]
    p = conv_params(w.quant(node), np.zeros((info.shape[0], 1), np.int8), bias,
                    node.attrs["activation"], fully_connected=node.op == "linear")
    rows = (f"{{.format = {FORMAT_CODES[info.dtype]}, .bits = {bits}, .saturate = "
            f"{int(mode == 'saturate')}, .row_bytes = {codes.shape[1]}, "
            f".weight = {w.array('uint8_t', codes)}}}")
    common = dict(in_zp=p.in_zp, out_zp=p.out_zp, lo=p.lo, hi=p.hi, rows=rows,
                  bias=w.array("int32_t", bias), mult=w.array("int32_t", p.mult),
                  shift=w.array("int32_t", p.shift))
    x, y = w.at(node.inputs[0]), w.at(node.outputs[0])
    if node.op == "linear":
        n_in = w.shape(node.inputs[0])[-1]
        fields = dict(n=w.size(node.inputs[0]) // n_in, **{"in": n_in}, out=info.shape[0],
                      **common)
        return f"ek_linear_rows({w.struct('ek_linear_rows_t', i, fields)}, col, {x}, {y});"
    fields = dict(**_geometry(w, node), **common)
    return f"ek_conv2d_rows({w.struct('ek_conv_rows_t', i, fields)}, col, {x}, {y});"


def _geometry(w, node: Node) -> dict:
    """``ek_conv_rows_t``'s shape fields; conv1d as a conv2d of height 1."""
    xs, ys = w.shape(node.inputs[0]), w.shape(node.outputs[0])
    kernel = w.graph.tensors[node.inputs[1]].shape[2:]
    a = node.attrs
    stride, dilation, pads = a["stride"], a["dilation"], a["padding"]
    if node.op == "conv1d":
        xs, ys, kernel = (*xs[:2], 1, xs[2]), (*ys[:2], 1, ys[2]), (1, *kernel)
        stride, dilation, pads = [1, *stride], [1, *dilation], [0, pads[0], 0, pads[1]]
    return dict(cin=xs[1], h=xs[2], w=xs[3], cout=ys[1], oh=ys[2], ow=ys[3], kh=kernel[0],
                kw=kernel[1], sh=stride[0], sw=stride[1], pt=pads[0], pl=pads[1],
                dh=dilation[0], dw=dilation[1], groups=a["groups"])
