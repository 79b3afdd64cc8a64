"""The weight schemes below int8: ``edgekit.quantize(graph, calib, scheme=...)`` with
``"int4"``, ``"ternary"``, ``"fp8_e4m3"``, ``"fp8_e5m2"`` or ``"fp16"``.

Each stores the weights of conv1d, conv2d and linear layers packed in its format
(``numerics.formats``: the tensor's dtype names it, ``"int4x2"`` for REx with two orders) and
leaves the activations, biases and every other op float32: the product is float32, with each
weight what its codes and scales stand for, and the runtime unpacks a row at a time in the
kernel (``runtime.lowbit``). These are weight formats, as TFLite's float16 and LiteRT's
int4 weight-only schemes are; the calibration data is checked but not needed.
"""

from __future__ import annotations

import copy
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.graph import Graph, QuantParams
from edgekit.numerics import formats

FORMAT = {"int4": "int4", "ternary": "ternary", "fp8_e4m3": "fp8_e4m3",
          "fp8_e5m2": "fp8_e5m2", "fp16": "float16"}  # scheme -> weight format
WEIGHTED = ("conv1d", "conv2d", "linear")  # the ops whose packed weights the runtime runs
GROUPED = ("int4", "ternary", "fp8_e4m3", "fp8_e5m2")  # group_size= applies
EXPANDED = ("int4",)  # rex= applies


def check_options(scheme: str, group_size: Any, rex: Any) -> None:
    if group_size is not None and (type(group_size) is not int or group_size < 1
                                   or scheme not in GROUPED):
        raise EdgekitError(f"group_size={group_size!r}: a positive int dividing each channel's "
                           f"weights, for the schemes {', '.join(GROUPED)} (not {scheme!r})")
    if type(rex) is not int or not 1 <= rex <= formats.MAX_ORDERS or (
            rex > 1 and scheme not in EXPANDED):
        raise EdgekitError(f"rex={rex!r}: REx residual expansion takes 1..{formats.MAX_ORDERS} "
                           f"orders, for the schemes {', '.join(EXPANDED)} (not {scheme!r})")


def quantize_weights(graph: Graph, scheme: str, group_size: int | None = None, rex: int = 1,
                     per_channel: bool = True) -> Graph:
    """A copy of float ``graph`` with its conv/linear weights in ``scheme``'s format."""
    fmt = FORMAT[scheme]
    g = copy.deepcopy(graph)
    done: set[str] = set()
    for node in g.nodes:
        name = node.inputs[1] if node.op in WEIGHTED else None
        if name is None or name in done:
            continue
        w = g.params[name]
        try:
            storage, scales = formats.quantize_weight(w, fmt, group_size, rex, per_channel)
        except EdgekitError as err:
            raise EdgekitError(f"quantize {scheme}: weight {name!r} of {node.op} "
                               f"{node.name!r}: {err}") from None
        g.params[name] = storage
        info = g.tensors[name]
        info.dtype = formats.dtype_name(fmt, rex)
        info.quant = (None if fmt == "float16" else  # float16 values need no scale
                      QuantParams([float(s) for s in scales.ravel()], [0] * scales.size, 0))
        done.add(name)
    g.metadata["quantized"] = scheme
    g.metadata["quantization"] = {"scheme": scheme, "group_size": group_size, "rex": rex,
                                  "per_channel": per_channel, "weights": sorted(done)}
    return g.validate()


def dequantized(graph: Graph) -> Graph:
    """The float32 Graph a low-bit one stands for: every packed weight replaced by its values
    (what a writer without the format, or a reference check, reads)."""
    g = copy.deepcopy(graph)
    for name, info in g.tensors.items():
        if formats.weight_dtype(info.dtype):
            scales = formats.scale_array(info.quant and info.quant.scale, info.dtype,
                                         info.shape)
            g.params[name] = formats.dequantize(g.params[name], scales,
                                                formats.weight_dtype(info.dtype)[0], info.shape)
            info.dtype, info.quant = "float32", None
    g.metadata.pop("quantized", None)
    g.metadata.pop("quantization", None)
    return g.validate()

