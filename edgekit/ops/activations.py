"""Pointwise activations: relu, relu6 and leaky_relu, with every backend's implementation.

relu and relu6 on int8 are a clamp to the activation's bounds (their output shares the input's
quantization); leaky_relu requantizes with two multipliers (``numerics.params.leaky_params``).
Spiking Graphs have no activations: conversion turns them into neurons.
"""

from __future__ import annotations

import numpy as np

from edgekit.ops import declare
from edgekit.ops.schema import OpDef, same_shape
from edgekit.ops.util import finish

relu = declare(OpDef("relu", (1, 1), {}, same_shape, quant="first_input",
                     reference=lambda x: finish(x, "relu"), doc="max(x, 0)"))

relu6 = declare(OpDef("relu6", (1, 1), {}, same_shape, quant="first_input",
                      reference=lambda x: finish(x, "relu6"), doc="min(max(x, 0), 6)"))


def _leaky_reference(x, *, alpha):
    return finish(np.where(x >= 0, x, x.astype(np.float64) * alpha))


leaky_relu = declare(OpDef("leaky_relu", (1, 1), {"alpha": 0.01}, same_shape,
                           reference=_leaky_reference, doc="x if x >= 0 else alpha * x"))

_SPIKING = "spiking Graphs have no activations: conversion turns them into neurons"


def _clamp(op: OpDef, onnx_type: str) -> None:
    """relu and relu6: a clamp to the activation's bounds everywhere."""
    name = op.name

    @op.implements("float32")
    def _(ins, out):
        from edgekit.runtime.kernels import elementwise
        from edgekit.runtime.registry import bind

        bounds = elementwise.ACTIVATION_BOUNDS[name]
        return bind(elementwise.clamp, ins[0].reshape(-1), *bounds, out.reshape(-1))

    @op.implements("int8")
    def _(ins, out, *, quant):
        from edgekit.numerics.params import activation_bounds
        from edgekit.runtime.int8 import check_shared
        from edgekit.runtime.kernels import elementwise
        from edgekit.runtime.registry import bind

        check_shared(name, quant)
        return bind(elementwise.clamp, ins[0].reshape(-1), *activation_bounds(name, quant[-1]),
                    out.reshape(-1))

    @op.implements("torch", names=(name, f"{name}_"))
    def _(c, x, *_, **__):
        return c.emit(name, [x])

    @op.implements("tflite")
    def _(w, node):
        w.unary(node, name.upper())

    @op.implements("onnx")
    def _(e, node, ins):
        return e.activate(ins[0], name)

    @op.implements("c")
    def _(w, i, node):
        from edgekit.numerics.params import activation_bounds

        lo, hi = activation_bounds(name, w.quant(node)[-1])
        return (f"ek_clamp_i8({w.size(node.outputs[0])}, {lo}, {hi}, {w.at(node.inputs[0])}, "
                f"{w.at(node.outputs[0])});")

    @op.implements("gpu")
    def _(x):
        import torch.nn.functional as F

        return getattr(F, name)(x)

    @op.implements("learn")
    def _(blocks, graph, node, where):
        from edgekit.learn.blocks import add_activation

        add_activation(blocks, name, 0.0, where)

    for backend in ("spiking", "spiking_int8", "onnx_spiking", "c_spiking", "quant_spiking"):
        op.unsupported(backend, _SPIKING)
    if onnx_type:
        op.implements("onnx_import", names=(onnx_type,))(lambda n, x, *_: n.emit(name, [x]))
    else:
        op.unsupported("onnx_import", "ONNX has no Relu6: Clip(0, 6) is imported as relu6")


_clamp(relu, "Relu")
_clamp(relu6, "")


@leaky_relu.implements("float32")
def _leaky_float32(ins, out, *, alpha):
    from edgekit.runtime.kernels import elementwise
    from edgekit.runtime.registry import bind

    return bind(elementwise.leaky_relu, ins[0].reshape(-1), np.float32(alpha), out.reshape(-1))


@leaky_relu.implements("int8")
def _leaky_int8(ins, out, *, alpha, quant):
    from edgekit.numerics.params import leaky_params
    from edgekit.runtime.kernels import int8_elementwise
    from edgekit.runtime.registry import bind

    p = leaky_params(quant[0], quant[1], alpha)
    return bind(int8_elementwise.leaky_relu, ins[0].reshape(-1), p.zx, p.zo, p.m_id, p.s_id,
                p.m_alpha, p.s_alpha, out.reshape(-1))


@leaky_relu.implements("torch", names=("leaky_relu", "leaky_relu_"))
def _leaky_torch(c, x, negative_slope=0.01, *_):
    return c.emit("leaky_relu", [x], {"alpha": float(negative_slope)})


@leaky_relu.implements("onnx_import", names=("LeakyRelu",))
def _leaky_onnx_import(n, x, *_):
    return n.emit("leaky_relu", [x], {"alpha": float(n.get("alpha", 0.01))})


@leaky_relu.implements("tflite")
def _leaky_tflite(w, node):
    w.unary(node, "LEAKY_RELU", w.options("LeakyRelu", alpha=float(node.attrs["alpha"])))


@leaky_relu.implements("onnx")
def _leaky_onnx(e, node, ins):
    return e.add("LeakyRelu", ins, alpha=float(node.attrs["alpha"]))


@leaky_relu.implements("c")
def _leaky_c(w, i, node):
    from dataclasses import asdict

    from edgekit.numerics.params import leaky_params

    q_in, q_out = w.quant(node)
    fields = {"size": w.size(node.outputs[0]),
              **asdict(leaky_params(q_in, q_out, node.attrs["alpha"]))}
    return f"ek_leaky_relu({w.struct('ek_leaky_t', i, fields)}, {w.at(node.inputs[0])}, " \
           f"{w.at(node.outputs[0])});"


@leaky_relu.implements("gpu")
def _leaky_gpu(x, *, alpha):
    import torch.nn.functional as F

    return F.leaky_relu(x, alpha)


@leaky_relu.implements("learn")
def _leaky_learn(blocks, graph, node, where):
    from edgekit.learn.blocks import add_activation

    add_activation(blocks, "leaky_relu", node.attrs["alpha"], where)


for _backend in ("spiking", "spiking_int8", "onnx_spiking", "c_spiking", "quant_spiking"):
    leaky_relu.unsupported(_backend, _SPIKING)
