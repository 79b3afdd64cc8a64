"""The weight schemes below int8: ``edgekit.quantize(graph, calib, scheme=...)`` with
``"int4"``, ``"ternary"``, ``"fp8_e4m3"``, ``"fp8_e5m2"`` or ``"fp16"``.

Each stores the weights of conv1d, conv2d and linear layers packed in its format
(``numerics.formats``: the tensor's dtype names it, ``"int4x2"`` for REx with two orders) and
leaves the activations, biases and every other op float32: the product is float32, with each
weight what its codes and scales stand for, and the runtime unpacks a row at a time in the
kernel (``runtime.lowbit``). These are weight formats, as TFLite's float16 and LiteRT's
int4 weight-only schemes are; the calibration data is checked but not needed.

``"int4_a8"`` and ``"ternary_a8"`` are the integer-activation variants the microcontroller
firmware runs: an int8 Graph (``docs/quantized-graph.md``: int8 activations, int32 biases,
TFLite's requantization) whose conv/linear weights are int4 or ternary codes, stored packed,
with one scale per output channel (``int8_weight``). A code times its channel's scale is the
weight, exactly as an int8 weight times its scale is, so every int8 backend's arithmetic holds;
the runtime (``runtime.lowbit``) and the firmware (``ek_lowbit.c``) unpack one row at a time.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph, QuantParams
from edgekit.numerics import formats

FORMAT = {"int4": "int4", "ternary": "ternary", "fp8_e4m3": "fp8_e4m3",
          "fp8_e5m2": "fp8_e5m2", "fp16": "float16"}  # scheme -> weight format
WEIGHTED = ("conv1d", "conv2d", "linear")  # the ops whose packed weights the runtime runs
GROUPED = ("int4", "ternary", "fp8_e4m3", "fp8_e5m2")  # group_size= applies
EXPANDED = ("int4",)  # rex= applies
INT8_ACTIVATIONS = {"int4_a8": "int4", "ternary_a8": "ternary"}  # scheme -> weight format


def check_options(scheme: str, group_size: Any, rex: Any, budget: bool) -> None:
    """``group_size``, ``rex`` and a budget (``size_bytes``/``energy_uj``) where the scheme
    takes them."""
    if scheme in INT8_ACTIVATIONS and (group_size is not None or rex != 1):
        raise EdgekitError(f"{scheme!r} keeps one scale per output channel (the int8 "
                           "requantization's): no group_size= or rex=")
    if group_size is not None and (type(group_size) is not int or group_size < 1
                                   or scheme not in GROUPED):
        raise EdgekitError(f"group_size={group_size!r}: a positive int (the most weights of a "
                           f"channel per scale), for the schemes {', '.join(GROUPED)} (not "
                           f"{scheme!r})")
    if budget and scheme != "mixed":
        raise EdgekitError(f"size_bytes=, energy_uj= and formats= are the 'mixed' scheme's "
                           f"options, not {scheme!r}'s")
    if type(rex) is not int or not 1 <= rex <= formats.MAX_ORDERS or (
            rex > 1 and scheme not in EXPANDED):
        raise EdgekitError(f"rex={rex!r}: REx residual expansion takes 1..{formats.MAX_ORDERS} "
                           f"orders, for the schemes {', '.join(EXPANDED)} (not {scheme!r})")


def int8_weight(w: np.ndarray, fmt: str, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(storage [1, C, row_bytes], scales [C] float32)`` of a ``*_a8`` scheme's weight: the
    format's codes (``formats.quantize_weight``, one scale per output channel, or one for the
    tensor), which the int8 kernels read as integer weights in [-7, 7] or [-1, 1]."""
    storage, scales = formats.quantize_weight(w, fmt, None, 1, per_channel)
    return storage, scales.reshape(-1)


def weight_names(graph: Graph) -> list[str]:
    """The weights a low-bit scheme stores packed: those of conv1d, conv2d and linear nodes,
    in node order, each once."""
    names = [n.inputs[1] for n in graph.nodes if n.op in WEIGHTED]
    return list(dict.fromkeys(names))


def quantize_weights(graph: Graph, scheme: str, group_size: int | None = None, rex: int = 1,
                     per_channel: bool = True) -> Graph:
    """A copy of float ``graph`` with its conv/linear weights in ``scheme``'s format."""
    choice = {name: (FORMAT[scheme], rex) for name in weight_names(graph)}
    return pack_weights(graph, choice, scheme, group_size, per_channel, {"rex": rex})


def pack_weights(graph: Graph, choice: dict[str, tuple[str, int]], scheme: str,
                 group_size: int | None, per_channel: bool, details: dict) -> Graph:
    """A copy of float ``graph`` with each weight of ``choice`` in its ``(format, orders)``;
    ``scheme`` and ``details`` go to the metadata."""
    g = copy.deepcopy(graph)
    for name, (fmt, orders) in choice.items():
        storage, scales = formats.quantize_weight(g.params[name], fmt, group_size, orders,
                                                  per_channel)
        g.params[name] = storage
        info = g.tensors[name]
        info.dtype = formats.dtype_name(fmt, orders)
        info.quant = (None if fmt == "float16" else  # float16 values need no scale
                      QuantParams([float(s) for s in scales.ravel()], [0] * scales.size, 0))
    g.metadata["quantized"] = scheme
    g.metadata["quantization"] = {"scheme": scheme, "group_size": group_size,
                                  "per_channel": per_channel, **details,
                                  "weights": {name: g.tensors[name].dtype for name in choice}}
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

