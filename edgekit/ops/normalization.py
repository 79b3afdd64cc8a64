"""softmax and layernorm: ops that normalize over axes, with every backend's implementation.

Their int8 kernels (the runtime's and the firmware's) compute them in float between a
dequantize and a quantize (docs/quantized-graph.md) at the edges ``numerics.params.float_edges``
gives both.
"""

from __future__ import annotations

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.ops import declare
from edgekit.ops.schema import OpDef, check_axis, fail, prod
from edgekit.ops.util import around_axis, axis_extents, finish


def _softmax_shape(s, a):
    check_axis(a["axis"], len(s[0]))
    return tuple(s[0])


def _softmax_reference(x, *, axis):
    e = np.exp(x.astype(np.float64) - x.max(axis=axis, keepdims=True))
    return finish(e / e.sum(axis=axis, keepdims=True))


softmax = declare(OpDef("softmax", (1, 1), {"axis": -1}, _softmax_shape,
                        quant=(1 / 256, -128),  # TFLite's fixed output quantization
                        reference=_softmax_reference, doc="exp(x) / sum(exp(x)) along axis"))


def _layernorm_shape(s, a):
    x, g, b = s
    k = a["normalized_ndim"]
    if not 1 <= k < len(x) or tuple(g) != tuple(x[-k:]) or tuple(b) != tuple(x[-k:]):
        fail(f"layernorm over {k} axes of {x} needs gamma/beta of shape {x[-k:]}, got {g}, {b}")
    return tuple(x)


def _layernorm_reference(x, gamma, beta, *, normalized_ndim, eps):
    axes = tuple(range(x.ndim - normalized_ndim, x.ndim))
    x = x.astype(np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return finish((x - mean) / np.sqrt(var + eps) * gamma + beta)


layernorm = declare(OpDef(
    "layernorm", (3, 3), {"normalized_ndim": 1, "eps": 1e-5}, _layernorm_shape,
    lambda i, o, a: 2 * prod(o), weight_inputs=(1, 2), reference=_layernorm_reference,
    doc="LayerNorm over the last normalized_ndim axes"))


# --- edgekit runtime --------------------------------------------------------------------------

@softmax.implements("float32")
def _softmax_float32(ins, out, *, axis):
    from edgekit.runtime.kernels import elementwise
    from edgekit.runtime.registry import bind

    return bind(elementwise.softmax, around_axis(ins[0], axis), around_axis(out, axis))


@layernorm.implements("float32")
def _layernorm_float32(ins, out, *, normalized_ndim, eps):
    from edgekit.runtime.kernels import norm
    from edgekit.runtime.registry import bind

    x, gamma, beta = ins
    features = gamma.size
    return bind(norm.layernorm, x.reshape(-1, features), gamma.reshape(-1), beta.reshape(-1),
                float(eps), out.reshape(-1, features))


def _float_scratch(shapes, out_shape, **_) -> int:
    from edgekit.runtime.int8 import scratch_bytes

    return scratch_bytes((shapes[0], np.float32), (out_shape, np.float32))


def _in_float(op: OpDef) -> None:
    """int8: dequantize the input, run the float32 kernel, quantize the output (tflite-micro's
    LUT softmax may differ by a step, docs/quantized-graph.md)."""
    @op.implements("int8", scratch=_float_scratch)
    def _(ins, out, *, quant, scratch, **attrs):
        from edgekit.numerics.params import float_edges
        from edgekit.runtime.int8 import carve
        from edgekit.runtime.kernels import int8_elementwise
        from edgekit.runtime.registry import sequence

        x_f, y_f = carve(scratch, (ins[0].shape, np.float32), (out.shape, np.float32))
        float_step = op.impls["float32"].fn([x_f, *ins[1:]], y_f, **attrs)
        e = float_edges(quant[0], quant[-1])
        return sequence([(int8_elementwise.dequantize, ins[0].reshape(-1), e.zx, e.sx,
                          x_f.reshape(-1)),
                         (float_step,),
                         (int8_elementwise.quantize, y_f.reshape(-1), e.so, e.zo,
                          out.reshape(-1))])


for _op in (softmax, layernorm):
    _in_float(_op)


# --- importers --------------------------------------------------------------------------------

@softmax.implements("torch", names=("softmax", "_softmax"))
def _softmax_torch(c, x, dim, *_, **__):
    return c.emit("softmax", [x], {"axis": int(dim) % len(c.b.shape(x.name))})


@softmax.implements("onnx_import", names=("Softmax",))
def _softmax_onnx_import(n, x):
    """Before opset 13 Softmax flattens from ``axis`` (default 1) on: the same as ours only
    when that is a single (last) axis."""
    from edgekit.converters.from_torch import Unsupported

    rank = len(n.shape(x))
    axis = n.axis(-1 if n.opset >= 13 else 1, rank)
    if n.opset < 13 and axis != rank - 1:
        raise Unsupported(f"Softmax(axis={axis}) of opset {n.opset} over several axes")
    return n.emit("softmax", [x], {"axis": axis})


@layernorm.implements("torch", names=("layer_norm", "native_layer_norm"))
def _layernorm_torch(c, x, normalized_shape, weight=None, bias=None, eps=1e-5, *_):
    """native_layer_norm (core ATen) also returns the mean and rstd, which nothing may read."""
    shape = [int(d) for d in normalized_shape]
    gamma = np.ones(shape, np.float32) if weight is None else c.const(weight, "layer_norm")
    beta = np.zeros(shape, np.float32) if bias is None else c.const(bias, "layer_norm")
    y = c.emit("layernorm", [x, c.param(gamma, "weight"), c.param(beta, "bias")],
               {"normalized_ndim": len(shape), "eps": float(eps)})
    return (y, None, None) if c.aten == "native_layer_norm" else y


@layernorm.implements("onnx_import", names=("LayerNormalization",))
def _layernorm_onnx_import(n, x, scale, bias=None):
    shape = n.shape(x)
    k = len(shape) - n.axis(-1, len(shape))
    norm = shape[-k:]
    gamma = np.broadcast_to(n.const(scale, "LayerNormalization with a computed scale"), norm)
    beta = np.zeros(norm) if bias is None else np.broadcast_to(
        n.const(bias, "LayerNormalization with a computed bias"), norm)
    y = n.emit("layernorm", [x, n.param(gamma, "weight"), n.param(beta, "bias")],
               {"normalized_ndim": k, "eps": float(n.get("epsilon", 1e-5))})
    return [y] + [None] * (n.n_out - 1)


# --- writers ----------------------------------------------------------------------------------

@softmax.implements("tflite")
def _softmax_tflite(w, node):
    """SOFTMAX works on the last TFLite axis: use a layout that puts the Graph's axis there."""
    layout = w.layout[node.inputs[0]]
    axis = node.attrs["axis"] % len(layout)
    if layout[-1] != axis:
        layout = (*(d for d in range(len(layout)) if d != axis), axis)
    x = w.value(node.inputs[0], layout)
    w.op("SOFTMAX", [x], [w.output(node, layout)], w.options("Softmax", beta=1.0))


_NO_INT8_TFLITE = ("layernorm has no int8 TFLite form (TFLite has no layer-norm builtin, and "
                   "its arithmetic in int8 would need quantization ranges the Graph does not "
                   "carry); keep it in a float32 Graph")


@layernorm.implements("tflite", no_int8=_NO_INT8_TFLITE)
def _layernorm_tflite(w, node):
    """float32 only, as MEAN/SQUARED_DIFFERENCE/RSQRT arithmetic (``_NO_INT8_TFLITE``)."""
    from edgekit.converters.to_tflite import identity

    if w.int8:
        raise EdgekitError(_NO_INT8_TFLITE)
    rank = len(w.graph.tensors[node.inputs[0]].shape)
    k, layout = node.attrs["normalized_ndim"], identity(rank)
    x = w.value(node.inputs[0], layout)
    axes = w.int32(list(range(rank - k, rank)))
    reduced = [1 if i >= rank - k else d for i, d in enumerate(w.shape(x))]

    def step(code, ins, shape, suffix, opts=None) -> int:
        out = w.derived(x, shape, f"/{suffix}")
        w.op(code, ins, [out], opts)
        return out

    mean = step("MEAN", [x, axes], reduced, "mean", w.options("Reducer", keepDims=True))
    sq = step("SQUARED_DIFFERENCE", [x, mean], w.shape(x), "sq")
    var = step("MEAN", [sq, axes], reduced, "var", w.options("Reducer", keepDims=True))
    eps = w.constant(f"{node.outputs[0]}/eps", np.array([node.attrs["eps"]], np.float32))
    inv = step("RSQRT", [step("ADD", [var, eps], reduced, "var_eps")], reduced, "rstd")
    centred = step("SUB", [x, mean], w.shape(x), "centred")
    normed = step("MUL", [centred, inv], w.shape(x), "normed")
    scaled = step("MUL", [normed, w.value(node.inputs[1], layout)], w.shape(x), "scaled")
    w.op("ADD", [scaled, w.value(node.inputs[2], layout)], [w.output(node, layout)])


@softmax.implements("onnx")
def _softmax_onnx(e, node, ins):
    return e.add("Softmax", ins, axis=node.attrs["axis"])


@layernorm.implements("onnx")
def _layernorm_onnx(e, node, ins):
    return e.add("LayerNormalization", ins, axis=-node.attrs["normalized_ndim"],
                 epsilon=float(node.attrs["eps"]))


def _c_edges(w, node) -> dict:
    from dataclasses import asdict

    from edgekit.numerics.params import float_edges

    quant = w.quant(node)
    return asdict(float_edges(quant[0], quant[-1]))


@softmax.implements("c")
def _softmax_c(w, i, node):
    """``ek_softmax`` over the (outer, n, inner) view around the axis, in float inside."""
    fields = dict(axis_extents(w.shape(node.inputs[0]), node.attrs["axis"]), **_c_edges(w, node))
    return f"ek_softmax({w.struct('ek_softmax_t', i, fields)}, {w.at(node.inputs[0])}, " \
           f"{w.at(node.outputs[0])});"


@layernorm.implements("c")
def _layernorm_c(w, i, node):
    """``ek_layernorm`` over rows of the normalized size, in float inside; gamma and beta stay
    float arrays."""
    gamma, beta = (w.graph.params[t].astype(np.float32) for t in node.inputs[1:3])
    fields = dict(rows=w.size(node.inputs[0]) // gamma.size, n=gamma.size, **_c_edges(w, node),
                  eps=float(node.attrs["eps"]), gamma=w.array("float", gamma),
                  beta=w.array("float", beta))
    return f"ek_layernorm({w.struct('ek_layernorm_t', i, fields)}, {w.at(node.inputs[0])}, " \
           f"{w.at(node.outputs[0])});"


# --- gpu target (torch) and on-device learning ------------------------------------------------

@softmax.implements("gpu")
def _softmax_gpu(x, *, axis):
    import torch

    return torch.softmax(x, dim=axis)


@layernorm.implements("gpu")
def _layernorm_gpu(x, gamma, beta, *, normalized_ndim, eps):
    import torch.nn.functional as F

    return F.layer_norm(x, x.shape[x.ndim - normalized_ndim:], gamma, beta, eps)


@softmax.implements("learn")
def _softmax_learn(blocks, graph, node, where):
    """Only as the graph's output: training reads the logits before it (the loss applies its
    own softmax), so there is nothing to join."""
    from edgekit.learn.blocks import last_block

    last_block(blocks, where)
    if node.outputs[0] not in graph.outputs:
        raise EdgekitError(f"finetune cannot train through {where}: softmax only as the "
                           "graph's output, where training reads the logits before it")


layernorm.unsupported("learn", "edgekit.learn has no gradient rule for layernorm (it trains "
                               "sequential chains of conv/linear blocks)")


# --- spiking backends -------------------------------------------------------------------------
# spiking, spiking_int8, onnx_spiking, c_spiking and quant_spiking of softmax and layernorm are
# registered here by the spiking engines' migration.

from edgekit.ops.spiking import no_spiking_form  # noqa: E402

for _op in (softmax, layernorm):
    no_spiking_form(_op, f"converters.snn.to_snn refuses {_op.name}: it has no rate-coded "
                         "spiking equivalent")
