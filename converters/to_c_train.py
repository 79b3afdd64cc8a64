"""``to_c_train``: firmware that trains a model's float head over its frozen int8 backbone.

The backbone (the deployed int8 Graph up to the head's input) is ``to_c``'s model as it is;
the head, a chain of linear layers (``edgekit.learn.blocks.Block``), becomes ``ek_head``
(``firmware/ek_train.h``'s ``ek_head_t``): its fp32 weights as initialised RAM (the image's
flash holds their first values, RAM the masters the updates change), gradient buffers,
AdamW's two moments when built for it, each layer's output and two error buffers.
``EK_TRAIN`` in ``model.h`` turns the training commands on (``firmware/ek_train_serve.c``).

``footprint`` counts what the image holds without building it: the backbone's firmware
footprint (``to_c``) plus every training buffer, the head's descriptors and the training code
as the firmware's measured sizes have it (``firmware_bridge.sizes``); the fit check of
``edgekit.learn.board`` refuses a head whose training does not fit the device.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

import numpy as np

from edgekit.converters import to_c
from edgekit.errors import EdgekitError
from edgekit.firmware_bridge.ports import DEFAULT as DEFAULT_BOARD
from edgekit.graph import Graph

F32 = 4
STEP_HEAD = 16  # TRAIN_STEP's bytes before the inputs (ek_train_serve.c)
INFER_REPLY = 8  # TRAIN_INFER's ticks before the logits
# ek_protocol.c's training cases (inlined into its server), its backbone pass and alignment:
# measured 304-380 B beyond ek_train_command's own code on the M3 and M4 (one and two layers)
DISPATCH_BYTES = 512


@dataclass(frozen=True)
class Layer:
    """One dense layer of the head: its fp32 weight ``(out, in)`` and bias, and activation
    (``edgekit.learn.kernels.ACT_CODES``)."""

    weight: np.ndarray
    bias: np.ndarray
    act: int = 0
    alpha: float = 0.0

    @property
    def shape(self) -> tuple[int, int]:
        return self.weight.shape


@dataclass(frozen=True)
class TrainingFootprint:
    """The training image: ``backbone`` (``to_c.Footprint``, its link buffers at the training
    payload) and, beside it, the head's bytes by kind."""

    backbone: to_c.Footprint
    weight_bytes: int  # fp32 masters: RAM, and their first values in flash
    gradient_bytes: int
    optimizer_bytes: int  # AdamW's moments (none for SGD)
    activation_bytes: int  # features, each layer's output, two error buffers
    code_bytes: int  # the training commands and kernels, the head's descriptors
    state_bytes: int  # the commands' own RAM

    @property
    def training_bytes(self) -> int:
        """RAM the training adds to the inference image."""
        return (self.weight_bytes + self.gradient_bytes + self.optimizer_bytes
                + self.activation_bytes + self.state_bytes)

    @property
    def sram_bytes(self) -> int:
        return self.backbone.sram_bytes + self.training_bytes

    @property
    def flash_bytes(self) -> int:
        return self.backbone.flash_bytes + self.weight_bytes + self.code_bytes


def _payload(backbone: Graph, classes: int) -> int:
    """The frame payload: the backbone's, a TRAIN_STEP with its inputs where they fit a
    frame (else they stream), TRAIN_INFER's logits."""
    inputs = sum(np.dtype(backbone.tensors[n].dtype).itemsize
                 * math.prod(backbone.tensors[n].shape[1:]) for n in backbone.inputs)
    return max(to_c.max_payload(backbone), min(STEP_HEAD + inputs, to_c.LINK_CHUNK_BYTES),
               INFER_REPLY + F32 * classes)


def check(backbone: Graph, head: list[Layer]) -> None:
    """Raise unless the firmware can train ``head`` on ``backbone``'s output."""
    to_c.check_supported(backbone)
    if len(backbone.outputs) != 1:
        raise EdgekitError("the board trains a head over a backbone with one output")
    info = backbone.tensors[backbone.outputs[0]]
    if info.dtype != "int8" or info.quant is None or len(info.quant.scale) != 1:
        raise EdgekitError(f"the head's input {backbone.outputs[0]!r} must be an int8 tensor "
                           "with one scale")
    width = math.prod(info.shape[1:])
    for layer in head:
        if layer.shape[1] != width or layer.act not in (0, 1, 2, 3):
            raise EdgekitError("the board trains a chain of linear layers (none, relu, relu6 "
                               "or leaky relu)")
        width = layer.shape[0]


def generate(backbone: Graph, head: list[Layer], adam: bool) -> tuple[str, str, str]:
    """``(model.c, model.h, hash)``: ``to_c``'s backbone with ``ek_head`` and ``EK_TRAIN``."""
    check(backbone, head)
    source, header, digest = to_c.generate(backbone)
    quant = backbone.tensors[backbone.outputs[0]].quant
    decls = ['#include "ek_train.h"']
    layers = []
    for i, layer in enumerate(head):
        out, inp = layer.shape
        arrays = {"w": layer.weight, "b": layer.bias}
        for name, value in arrays.items():
            body = ",".join(repr(float(v)) + "f" for v in
                            np.asarray(value, np.float32).reshape(-1).tolist())
            decls.append(f"static float ekt_{name}{i}[{np.size(value)}] = {{{body}}};")
        sizes = {"gw": out * inp, "gb": out, "y": out}
        if adam:
            sizes.update(mw=out * inp, vw=out * inp, mb=out, vb=out)
        decls += [f"static float ekt_{k}{i}[{n}];" for k, n in sizes.items()]
        ptr = {k: f"ekt_{k}{i}" if k in sizes or k in arrays else "0"
               for k in ("w", "b", "gw", "gb", "mw", "vw", "mb", "vb", "y")}
        layers.append(f"{{.in = {inp}, .out = {out}, .act = {layer.act}, .alpha = "
                      f"{float(np.float32(layer.alpha))!r}f, "
                      + ", ".join(f".{k} = {v}" for k, v in ptr.items()) + "}")
    width = max(max(layer.shape) for layer in head)
    decls += [f"static const ek_dense_t ekt_layers[{len(head)}] = {{{', '.join(layers)}}};",
              f"static float ekt_x[{head[0].shape[1]}], ekt_dy[{width}], ekt_dz[{width}];",
              f"const ek_head_t ek_head = {{.n_layers = {len(head)}, .layers = ekt_layers, "
              f".x = ekt_x, .dy = ekt_dy, .dz = ekt_dz, "
              f".scale = {float(np.float32(quant.scale[0]))!r}f, "
              f".zero_point = {int(quant.zero_point[0])}, .adam = {int(adam)}}};", ""]
    source = source + "\n".join(decls)
    new = hashlib.sha256(source.encode()).hexdigest()[:16]
    source = source.replace(f'.hash = "{digest}"', f'.hash = "{new}"', 1)
    payload = _payload(backbone, head[-1].shape[0])
    header, n = re.subn(r"#define EK_MAX_PAYLOAD \d+\n",
                        f"#define EK_MAX_PAYLOAD {payload}\n#define EK_TRAIN 1\n", header)
    assert n == 1, "to_c.model_header changed: EK_MAX_PAYLOAD not found"
    return source, header.replace(digest, new), new


def footprint(backbone: Graph, head: list[Layer], adam: bool,
              board: str = DEFAULT_BOARD) -> TrainingFootprint:
    """What the image of ``generate(backbone, head, adam)`` takes on ``board``."""
    from dataclasses import replace

    from edgekit.firmware_bridge.sizes import board_sizes

    check(backbone, head)
    fp = to_c.footprint(backbone, board)
    link = to_c.link_bytes(_payload(backbone, head[-1].shape[0]), len(backbone.nodes))
    fp = replace(fp, link_bytes=link)
    sizes = board_sizes(board)
    code, state = sizes.kernel("ek_train_command")
    params = sum(layer.weight.size + layer.bias.size for layer in head)
    outputs = sum(layer.shape[0] for layer in head)
    width = max(max(layer.shape) for layer in head)
    descriptors = (sizes.struct("ek_dense_t") * len(head) + sizes.struct("ek_head_t"))
    return TrainingFootprint(
        fp, F32 * params, F32 * params, 2 * F32 * params if adam else 0,
        F32 * (head[0].shape[1] + outputs + 2 * width),
        code + DISPATCH_BYTES + descriptors, state)
